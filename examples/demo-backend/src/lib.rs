//! Two tiny services for the `bff` example to call: `GET .../users/<id>`
//! answers a user, `GET .../orders?user=<id>` their orders, as JSON.

use serde_json::json;
use shoal::{Request, Response};

fn handle(request: Request) -> Response {
    let path = request.path();
    if let Some(id) = path.rsplit_once("/users/").map(|(_, id)| id) {
        return Response::json(&json!({ "id": id, "name": format!("User {id}") }));
    }
    if path.ends_with("/orders") {
        let user = request
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("user=")))
            .unwrap_or("?");
        return Response::json(&json!([
            { "id": 1, "user": user, "item": "shoal t-shirt" },
            { "id": 2, "user": user, "item": "wasm sticker" },
        ]));
    }
    Response::error(404, "try /users/<id> or /orders?user=<id>")
}

shoal::export!(handle);
