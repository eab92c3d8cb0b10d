//! Allocates `?mb=N` MiB and writes to every page of it; without `mb`, keeps
//! allocating 1 MiB blocks until an allocation fails (which aborts: a trap).

use std::hint::black_box;

use shoal::{Request, Response};

const MIB: usize = 1 << 20;

fn handle(request: Request) -> Response {
    let wanted: Option<usize> = request
        .query()
        .and_then(|q| q.strip_prefix("mb="))
        .and_then(|n| n.parse().ok());
    let mut blocks = Vec::new();
    let mut held = 0;
    while wanted.is_none_or(|mb| held < mb) {
        let mut block = vec![0u8; MIB];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        blocks.push(black_box(block));
        held += 1;
    }
    Response::text(format!("holding {held} MiB\n"))
}

shoal::export!(handle);
