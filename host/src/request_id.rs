//! Request ids: the caller's `x-request-id` when it sent a usable one (so a
//! trace across the mesh keeps one id), otherwise a new one.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

/// The header that carries the id, in requests and responses.
pub const HEADER: &str = "x-request-id";

/// The longest incoming id accepted as is; a longer one is replaced.
const MAX_LEN: usize = 128;

/// Makes new ids: a random per-process prefix and a counter, so ids are
/// unique within the process and, with high probability, across processes.
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl Default for RequestIds {
    /// A generator with a fresh random prefix.
    fn default() -> Self {
        Self {
            prefix: RandomState::new().hash_one(std::process::id()),
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
                let id = format!("{:016x}{n:08x}", self.prefix);
                HeaderValue::try_from(id).expect("hex digits are a valid header value")
            }
        }
    }
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
}
