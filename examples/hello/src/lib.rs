//! The smallest Shoal function: says hello, to `?name=` if given.

use shoal::{Request, Response};

fn handle(request: Request) -> Response {
    let name = request
        .query()
        .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("name=")))
        .unwrap_or("world");
    Response::text(format!("Hello, {name}!\n"))
}

shoal::export!(handle);
