//! Prints `sleeping N ms` to stdout, sleeps `?ms=N` milliseconds (default
//! 1000), then answers `slept N ms`.

use std::time::Duration;

use shoal::{Request, Response};

fn handle(request: Request) -> Response {
    let ms: u64 = request
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    println!("sleeping {ms} ms");
    std::thread::sleep(Duration::from_millis(ms));
    Response::text(format!("slept {ms} ms\n"))
}

shoal::export!(handle);
