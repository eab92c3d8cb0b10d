//! Reads the request body 1 KiB at a time, pausing `?pause_ms=N` between
//! reads, and answers how many bytes it read.

use std::io::Read;
use std::time::Duration;

use shoal::{Request, Response};

fn handle(request: Request) -> Response {
    let pause: u64 = request
        .query()
        .and_then(|q| q.strip_prefix("pause_ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut body = request.into_body_reader();
    let mut buf = [0u8; 1024];
    let mut total = 0;
    loop {
        match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(error) => return Response::error(400, format!("cannot read the body: {error}")),
        }
        std::thread::sleep(Duration::from_millis(pause));
    }
    Response::text(format!("read {total} bytes\n"))
}

shoal::export!(handle);
