//! Answers how many bytes of its static 1 MiB it found written (a fresh
//! instance finds none), after filling all of it; with `?ms=N` it prints
//! `filled`, then sleeps N milliseconds before answering.

use std::time::Duration;

use shoal::{Request, Response};

static mut PAGES: [u8; 1 << 20] = [0; 1 << 20];

fn handle(request: Request) -> Response {
    let ms: u64 = request
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // SAFETY: one request at a time runs in an instance.
    let found = unsafe {
        let pages = &mut *(&raw mut PAGES);
        let found = pages.iter().filter(|byte| **byte != 0).count();
        pages.fill(0xAB);
        found
    };
    if ms > 0 {
        println!("filled");
        std::thread::sleep(Duration::from_millis(ms));
    }
    Response::text(format!("{found}\n"))
}

shoal::export!(handle);
