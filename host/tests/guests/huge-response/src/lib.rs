//! Streams a response of `?mb=N` MiB (default 64), generated as it is sent.

use std::io::Read;

use shoal::{Request, Response};

struct Pattern {
    left: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for (i, byte) in buf[..n].iter_mut().enumerate() {
            *byte = (i % 251) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn handle(request: Request) -> Response {
    let mb: u64 = request
        .query()
        .and_then(|q| q.strip_prefix("mb="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    Response::ok()
        .with_header("content-type", "application/octet-stream")
        .with_reader(Pattern { left: mb << 20 })
}

shoal::export!(handle);
