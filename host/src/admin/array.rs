//! A JSON array answer made a chunk at a time, as the client reads it.
//!
//! `GET /v1/functions` of a host with 100,000 functions is 57 MB of JSON.
//! Made whole, it held a runtime thread for 0.4 s, raised the host's memory
//! by twice its size, and left the allocator giving that memory back over
//! the next ten seconds. Made in chunks, it holds one chunk at a time, and
//! the thread is free between them.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;

use crate::body::HostBody;

/// How many bytes a chunk holds, about: it ends after the item that
/// reaches this size.
const CHUNK: usize = 64 * 1024;

/// A 200 answer: the pretty JSON array of `items`, byte for byte what
/// [`super::json`] writes for a `Vec` of them, made as the client reads it.
pub(super) fn answer<T, I>(items: I) -> Response<HostBody>
where
    T: Serialize,
    I: Iterator<Item = T> + Send + 'static,
{
    let body = HostBody::Chunks(Box::new(Chunks::new(items)));
    super::json_body(StatusCode::OK, body)
}

/// The chunks of the array.
struct Chunks<I> {
    items: I,
    /// Whether the opening bracket is written.
    opened: bool,
    /// How many items are written.
    written: usize,
    /// Whether the closing bracket is written.
    closed: bool,
    /// One item's JSON, before it is indented into the chunk.
    item: Vec<u8>,
}

impl<I> Chunks<I> {
    fn new(items: I) -> Self {
        Self {
            items,
            opened: false,
            written: 0,
            closed: false,
            item: Vec::new(),
        }
    }
}

impl<T: Serialize, I: Iterator<Item = T>> Iterator for Chunks<I> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.closed {
            return None;
        }
        let mut chunk = Vec::with_capacity(CHUNK * 2);
        if !std::mem::replace(&mut self.opened, true) {
            chunk.push(b'[');
        }
        while chunk.len() < CHUNK {
            let Some(item) = self.items.next() else {
                let end: &[u8] = if self.written == 0 { b"]\n" } else { b"\n]\n" };
                chunk.extend_from_slice(end);
                self.closed = true;
                break;
            };
            let separator: &[u8] = if self.written == 0 { b"\n  " } else { b",\n  " };
            chunk.extend_from_slice(separator);
            self.item.clear();
            serde_json::to_writer_pretty(&mut self.item, &item).expect("admin views serialize");
            // One level deeper, as an element of the array. A JSON string
            // holds no raw line break, so every one is the format's own.
            let mut from = 0;
            for newline in memchr::memchr_iter(b'\n', &self.item) {
                chunk.extend_from_slice(&self.item[from..newline]);
                chunk.extend_from_slice(b"\n  ");
                from = newline + 1;
            }
            chunk.extend_from_slice(&self.item[from..]);
            self.written += 1;
        }
        Some(Bytes::from(chunk))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn items(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                json!({
                    "name": format!("f{i}"),
                    "routes": [format!("/f{i}"), "/a\nb"],
                    "empty": [],
                    "nested": {"limits": {"memory": i, "none": {}}},
                    "text": "a \"quoted\"\tline\n",
                })
            })
            .collect()
    }

    #[test]
    fn the_chunks_make_the_array_a_whole_answer_would() {
        for n in [0, 1, 2, 3, 2_000] {
            let items = items(n);
            let mut whole = serde_json::to_vec_pretty(&items).unwrap();
            whole.push(b'\n');
            let chunks: Vec<Bytes> = Chunks::new(items.into_iter()).collect();
            assert_eq!(chunks.concat(), whole, "{n} items");
            if n == 2_000 {
                assert!(chunks.len() > 4, "{} chunks", chunks.len());
                let largest = chunks.iter().map(Bytes::len).max().unwrap();
                assert!(largest < CHUNK + 1024, "a chunk of {largest} bytes");
            }
        }
    }
}
