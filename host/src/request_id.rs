//! Request ids: the caller's `x-request-id` when it sent a usable one (so a
//! trace across the mesh keeps one id), otherwise a new one.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;

/// The header that carries the id, in requests and responses.
pub const HEADER: &str = "x-request-id";

/// The longest incoming id accepted as is; a longer one is replaced.
const MAX_LEN: usize = 128;

/// Makes new ids: a random per-process prefix and a counter, so ids are
/// unique within the process and, with high probability, across processes.
/// An id is the prefix's 16 hex digits, then the counter's (at least 8).
pub struct RequestIds {
    /// The prefix, in hex digits.
    prefix: [u8; 16],
    next: AtomicU64,
}

impl Default for RequestIds {
    /// A generator with a fresh random prefix.
    fn default() -> Self {
        Self {
            prefix: hex(RandomState::new().hash_one(std::process::id())),
            next: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// The id for a request carrying `incoming` (its `x-request-id`, if any).
    pub fn for_request(&self, incoming: Option<&HeaderValue>) -> HeaderValue {
        match incoming {
            Some(id) if is_usable(id) => id.clone(),
            _ => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                // Not `format!`: with a width it took about 1% of
                // a request's CPU.
                let digits = (16 - n.leading_zeros() as usize / 4).max(8);
                let mut id = Vec::with_capacity(self.prefix.len() + digits);
                id.extend_from_slice(&self.prefix);
                id.extend_from_slice(&hex(n)[16 - digits..]);
                HeaderValue::from_maybe_shared(Bytes::from(id))
                    .expect("hex digits are a valid header value")
            }
        }
    }
}

/// `n`'s 16 hex digits, zero-padded.
fn hex(n: u64) -> [u8; 16] {
    let mut digits = [0; 16];
    hex::encode_to_slice(n.to_be_bytes(), &mut digits).expect("8 bytes make 16 digits");
    digits
}

/// Printable ASCII without spaces, 1 to [`MAX_LEN`] bytes: safe to echo into
/// logs and error bodies.
fn is_usable(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_incoming_id_is_kept_and_others_are_replaced() {
        let ids = RequestIds::default();
        let kept = HeaderValue::from_static("abc-123");
        assert_eq!(ids.for_request(Some(&kept)), kept);
        let spaced = HeaderValue::from_static("a b");
        let long = HeaderValue::try_from("x".repeat(MAX_LEN + 1)).unwrap();
        for bad in [Some(&spaced), Some(&long), None] {
            let new = ids.for_request(bad);
            assert_ne!(Some(&new), bad);
            assert!(is_usable(&new));
        }
        assert_ne!(ids.for_request(None), ids.for_request(None));
    }

    #[test]
    fn a_new_id_is_the_prefix_then_the_counter_in_hex() {
        let ids = RequestIds {
            prefix: *b"0123456789abcdef",
            next: AtomicU64::new(0x2a),
        };
        assert_eq!(ids.for_request(None), "0123456789abcdef0000002a");
        assert_eq!(ids.for_request(None), "0123456789abcdef0000002b");
        ids.next.store(0x1_2345_6789, Ordering::Relaxed);
        assert_eq!(ids.for_request(None), "0123456789abcdef123456789");
        ids.next.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(ids.for_request(None), "0123456789abcdefffffffffffffffff");
        assert_eq!(&hex(0xfeed), b"000000000000feed");
    }
}
