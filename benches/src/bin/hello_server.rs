//! `hello-server`: the native baseline of the throughput benchmark, a hyper
//! server answering `Hello, world!` on one current-thread tokio runtime.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use clap::Parser;

/// Answer every HTTP/1.1 request with `Hello, world!`.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port, and the address is
    /// printed as `listening on http://ADDR`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    shoal_benches::native::serve(Args::parse().listen)
}
