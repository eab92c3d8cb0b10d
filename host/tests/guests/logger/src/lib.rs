//! Writes two lines to stdout and an unterminated line to stderr, then
//! answers `logged`.

use std::io::Write as _;

fn handle(_: shoal::Request) -> shoal::Response {
    print!("first stdout line\nsecond ");
    println!("stdout line");
    eprint!("a stderr line without a newline");
    std::io::stderr().flush().unwrap();
    shoal::Response::text("logged\n")
}

shoal::export!(handle);
