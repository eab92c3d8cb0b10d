//! The native baseline: a hyper HTTP/1.1 server (keep-alive) that answers
//! every request with [`HELLO_BODY`], as the Rust hello component does. It
//! runs on one tokio current-thread runtime: one thread, like the single CPU
//! it is pinned to.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::servers::HELLO_BODY;

/// Serves hello on `listen` until the process is killed. Prints
/// `listening on http://ADDR` on stdout once it accepts connections.
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(accept_loop(listen))
}

async fn accept_loop(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("cannot accept a connection: {error}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request| async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header(header::CONTENT_TYPE, "text/plain")
                        .body(Full::new(Bytes::from_static(HELLO_BODY.as_bytes())))
                        .expect("a static response is valid"),
                )
            });
            // A client that goes away mid-request is not the server's
            // failure.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
