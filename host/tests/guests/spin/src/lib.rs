//! Computes without pause: for `?ms=N` milliseconds, or forever with
//! `?forever`. It never calls the host while it spins.

use std::hint::black_box;
use std::time::{Duration, Instant};

use shoal::{Request, Response};

fn handle(request: Request) -> Response {
    let query = request.query().unwrap_or("");
    if query == "forever" {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }
    let ms: u64 = query
        .strip_prefix("ms=")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let until = Instant::now() + Duration::from_millis(ms);
    let mut spins: u64 = 0;
    while Instant::now() < until {
        spins = black_box(spins + 1);
    }
    Response::text(format!("spun {ms} ms\n"))
}

shoal::export!(handle);
