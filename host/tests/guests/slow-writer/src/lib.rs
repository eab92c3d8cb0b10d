//! Streams `?chunks=N` lines (default 5), pausing `?pause_ms=M` (default 100)
//! before each.

use std::io::Read;
use std::time::Duration;

use shoal::{Request, Response};

struct Slow {
    left: u32,
    pause: Duration,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        std::thread::sleep(self.pause);
        self.left -= 1;
        let line = format!("line, {} to go\n", self.left);
        let n = line.len().min(buf.len());
        buf[..n].copy_from_slice(&line.as_bytes()[..n]);
        Ok(n)
    }
}

fn param(request: &Request, name: &str) -> Option<u64> {
    request
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

fn handle(request: Request) -> Response {
    let left = param(&request, "chunks").unwrap_or(5) as u32;
    let pause = Duration::from_millis(param(&request, "pause_ms").unwrap_or(100));
    Response::ok().with_reader(Slow { left, pause })
}

shoal::export!(handle);
