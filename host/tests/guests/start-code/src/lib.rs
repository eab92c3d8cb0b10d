//! Code that runs as the component is instantiated, before any request:
//! the core module's `_initialize`, which the component calls as it is
//! made. What it does is the `START` environment variable's: `loop`
//! (forever), `trap`, or nothing. Each request answers how many times it
//! ran in this instance.

use std::sync::atomic::{AtomicU32, Ordering};

static STARTS: AtomicU32 = AtomicU32::new(0);

#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    STARTS.fetch_add(1, Ordering::Relaxed);
    match std::env::var("START").as_deref() {
        Ok("loop") => {
            let mut spins = 0u64;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        Ok("trap") => panic!("start code trapped"),
        _ => {}
    }
}

fn handle(_: shoal::Request) -> shoal::Response {
    shoal::Response::text(format!(
        "start code ran {} time(s)\n",
        STARTS.load(Ordering::Relaxed)
    ))
}

shoal::export!(handle);
