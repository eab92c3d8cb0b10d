//! An event handler. Events arrive as CloudEvents; for each
//! `com.example.order.created` whose data is an order,
//!
//! ```json
//! {"order": "A-17", "items": [{"sku": "mug", "quantity": 2, "unit_price_cents": 1250},
//!                             {"sku": "tea", "quantity": 1, "unit_price_cents": 1650}]}
//! ```
//!
//! it replies with a `com.example.order.priced` event about the order, its
//! data the number of items and the total:
//!
//! ```json
//! {"order": "A-17", "items": 3, "total_cents": 4150}
//! ```
//!
//! The reply's id is the incoming event's id with `/priced` after it, so a
//! redelivered event gets the same reply and a consumer can drop the
//! duplicate. An event of another type is accepted with nothing to do (202);
//! data that is not an order is refused with 422, which a broker does not
//! retry; a request that is not an event at all gets 400.

use serde::Deserialize;
use serde_json::json;
use shoal::{Event, Request, Response};

const ORDER_CREATED: &str = "com.example.order.created";
const ORDER_PRICED: &str = "com.example.order.priced";
const SOURCE: &str = "/shoal/examples/orders";

#[derive(Deserialize)]
struct Order {
    order: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
    unit_price_cents: u64,
}

fn handle(request: Request) -> Response {
    let event = match request.event() {
        Ok(event) => event,
        Err(error) => return Response::error(400, error),
    };
    if event.ty() != ORDER_CREATED {
        return Response::accepted();
    }
    let order = match event
        .json::<Order>()
        .map_err(|e| e.to_string())
        .and_then(price)
    {
        Ok(order) => order,
        Err(reason) => return Response::error(422, reason),
    };
    let priced = Event::new(format!("{}/priced", event.id()), SOURCE, ORDER_PRICED)
        .with_subject(&order.order)
        .with_json(&json!({
            "order": order.order,
            "items": order.items,
            "total_cents": order.total_cents,
        }));
    match priced {
        Ok(priced) => Response::event(priced),
        Err(error) => Response::error(500, error),
    }
}

/// An order's count of items and total price.
struct Priced {
    order: String,
    items: u64,
    total_cents: u64,
}

fn price(order: Order) -> Result<Priced, String> {
    if order.order.is_empty() || order.items.is_empty() {
        return Err("an order needs an id and at least one item".to_owned());
    }
    let (mut items, mut total_cents) = (0u64, 0u64);
    for item in &order.items {
        if item.sku.is_empty() || item.quantity == 0 {
            return Err(format!(
                "order {}: each item needs a sku and a quantity",
                order.order
            ));
        }
        items += u64::from(item.quantity);
        total_cents = u64::from(item.quantity)
            .checked_mul(item.unit_price_cents)
            .and_then(|line| total_cents.checked_add(line))
            .ok_or_else(|| format!("order {}: the total is too large", order.order))?;
    }
    Ok(Priced {
        order: order.order,
        items,
        total_cents,
    })
}

shoal::export!(handle);
