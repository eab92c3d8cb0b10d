//! Recurses `?depth=N` calls deep. The calls keep their state in wasm
//! locals, so deep enough recursion exhausts the engine's call stack (not
//! the guest's in-memory stack).

use std::hint::black_box;

use shoal::{Request, Response};

fn descend(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    // Opaque to the optimiser, so the recursion cannot become a loop.
    black_box(descend(black_box(depth - 1))) + 1
}

fn handle(request: Request) -> Response {
    let depth: u64 = request
        .query()
        .and_then(|q| q.strip_prefix("depth="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    Response::text(format!("reached {}\n", descend(depth)))
}

shoal::export!(handle);
