//! Write a Shoal function in Rust.
//!
//! A function is a handler from a [`Request`] to anything that is
//! [`IntoResponse`], exported with [`export!`]:
//!
//! ```no_run
//! use shoal::{Request, Response};
//!
//! fn handle(request: Request) -> Response {
//!     Response::text(format!("hello from {}\n", request.path()))
//! }
//!
//! shoal::export!(handle);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type
//! `cdylib`). The result is a standard `wasi:http/proxy` component: it runs
//! on Shoal, and unchanged on `wasmtime serve` and Spin. Nothing here is
//! specific to Shoal; it is a small API over the standard bindings, which
//! stay reachable as [`wasi`] for anything this crate does not cover.
//!
//! Bodies stream: [`Request::into_body_reader`] reads the request body as it
//! arrives and [`Response::with_reader`] streams a response body from any
//! [`std::io::Read`], so neither has to fit in memory. [`outbound`] calls
//! other services.
//!
//! A function triggered by events gets each one as a CloudEvents 1.0
//! request: [`Request::event`] reads it as an [`Event`] (binary or
//! structured mode), and [`Response::event`] replies with another event, or
//! [`Response::accepted`] with none.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod event;
pub mod outbound;
mod request;
mod response;

pub use event::{Event, EventError};
pub use request::{BodyReader, Request};
pub use response::{IntoResponse, Response};

/// The standard WASI 0.2 bindings this crate is built on.
pub use wasip2 as wasi;

/// Exports `handler` (a `fn(Request) -> impl IntoResponse`) as the
/// component's `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! export {
    ($handler:path) => {
        struct __ShoalIncomingHandler;

        impl $crate::__private::Guest for __ShoalIncomingHandler {
            fn handle(
                request: $crate::__private::IncomingRequest,
                response_out: $crate::__private::ResponseOutparam,
            ) {
                $crate::__private::serve(request, response_out, $handler)
            }
        }

        $crate::__private::wasip2::http::proxy::export!(
            __ShoalIncomingHandler with_types_in $crate::__private::wasip2
        );
    };
}

#[doc(hidden)]
pub mod __private {
    pub use wasip2;
    pub use wasip2::exports::http::incoming_handler::Guest;
    pub use wasip2::http::types::{IncomingRequest, ResponseOutparam};

    use crate::{IntoResponse, Request};

    /// Runs `handler` on one request and sends what it returns.
    pub fn serve<R: IntoResponse>(
        request: IncomingRequest,
        response_out: ResponseOutparam,
        handler: fn(Request) -> R,
    ) {
        let response = handler(Request::from_incoming(request)).into_response();
        response.send(response_out);
    }
}
