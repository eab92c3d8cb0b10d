//! Answers with the status `?code=N` (default 200), whatever it is: a
//! function that answers `101` or `999` must not reach the client as such.

use shoal::{Request, Response};

fn handle(request: Request) -> Response {
    let code: u16 = request
        .query()
        .and_then(|q| q.strip_prefix("code="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    Response::new(code)
}

shoal::export!(handle);
