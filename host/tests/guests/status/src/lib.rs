//! Answers with the status `?code=N` (default 200), whatever it is: a
//! function that answers `101` or `999` must not reach the client as such.
//! With `&bytes=N`, the body is N bytes counting `0123456789` over and over.

use shoal::{Request, Response};

fn handle(request: Request) -> Response {
    let param = |name: &str| {
        request.query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .and_then(|n| n.parse::<usize>().ok())
        })
    };
    let code = param("code")
        .and_then(|code| u16::try_from(code).ok())
        .unwrap_or(200);
    let bytes = param("bytes").unwrap_or(0);
    let body: Vec<u8> = (0..bytes).map(|i| b'0' + (i % 10) as u8).collect();
    Response::new(code).with_body(body)
}

shoal::export!(handle);
