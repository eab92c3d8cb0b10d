//! A backend-for-frontend. `GET /bff/users/<id>` asks the users service for
//! the user and the orders service for their orders, both at once, and
//! answers one JSON document:
//!
//! ```json
//! {"user": {...}, "orders": [...]}
//! ```
//!
//! The services' base URLs come from the environment (`USERS_URL`,
//! `ORDERS_URL`); the manifest must allow their origins in
//! `allowed_outbound_hosts`. The host carries the request's trace headers
//! onto both calls, so the mesh sees one trace.

use serde_json::{Value, json};
use shoal::outbound::{IncomingResponse, OutboundError, OutgoingRequest};
use shoal::{Request, Response};

fn handle(request: Request) -> Response {
    let Some(id) = request
        .path()
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
    else {
        return Response::error(400, "usage: GET /bff/users/<id>");
    };
    let (Ok(users), Ok(orders)) = (std::env::var("USERS_URL"), std::env::var("ORDERS_URL")) else {
        return Response::error(500, "USERS_URL and ORDERS_URL must be set");
    };
    match merge(&format!("{users}/{id}"), &format!("{orders}?user={id}")) {
        Ok(merged) => Response::json(&merged),
        Err(error) => Response::error(502, error),
    }
}

fn merge(user_url: &str, orders_url: &str) -> Result<Value, String> {
    // Both calls are in flight before either is awaited.
    let user = OutgoingRequest::get(user_url).start();
    let orders = OutgoingRequest::get(orders_url).start();
    let user = json_of("users", user.and_then(|pending| pending.wait()))?;
    let orders = json_of("orders", orders.and_then(|pending| pending.wait()))?;
    Ok(json!({ "user": user, "orders": orders }))
}

fn json_of(
    service: &str,
    response: Result<IncomingResponse, OutboundError>,
) -> Result<Value, String> {
    let response = response.map_err(|e| format!("the {service} service: {e}"))?;
    if response.status() != 200 {
        return Err(format!(
            "the {service} service answered {}",
            response.status()
        ));
    }
    response
        .json()
        .map_err(|e| format!("the {service} service: {e}"))
}

shoal::export!(handle);
