//! Writes two lines to stdout and an unterminated line to stderr, then
//! answers `logged`. With `?mb=N`, writes N MiB of 1 KiB lines to stdout
//! first.

use std::io::Write as _;

fn handle(request: shoal::Request) -> shoal::Response {
    let mb: usize = request
        .query()
        .and_then(|q| q.strip_prefix("mb="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let line = format!("{}\n", "x".repeat(1023));
    let mut stdout = std::io::stdout().lock();
    for _ in 0..mb * 1024 {
        stdout.write_all(line.as_bytes()).unwrap();
    }
    drop(stdout);
    print!("first stdout line\nsecond ");
    println!("stdout line");
    eprint!("a stderr line without a newline");
    std::io::stderr().flush().unwrap();
    shoal::Response::text("logged\n")
}

shoal::export!(handle);
