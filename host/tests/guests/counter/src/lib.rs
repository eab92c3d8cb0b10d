//! Answers how many requests its instance has served, counting this one: a
//! fresh instance always answers 1. With `?trap` it counts, then traps.

use std::sync::atomic::{AtomicU32, Ordering};

use shoal::{Request, Response};

static SERVED: AtomicU32 = AtomicU32::new(0);

fn handle(request: Request) -> Response {
    let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    if request.query() == Some("trap") {
        panic!("trapping after {served} requests");
    }
    Response::text(format!("{served}\n"))
}

shoal::export!(handle);
