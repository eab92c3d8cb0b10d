//! Panics on every request; a Rust panic in wasm is a trap.

fn handle(_: shoal::Request) -> shoal::Response {
    panic!("boom: this function always panics");
}

shoal::export!(handle);
