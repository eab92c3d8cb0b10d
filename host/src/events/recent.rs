//! The events delivered lately, to see duplicates.
//!
//! Delivery is at least once: a broker that got no answer in time sends the
//! event again, and a retried failure is the same event. CloudEvents makes
//! `source` and `id` unique to an event, so the host remembers the last
//! [`CAPACITY`] of them (as 64-bit keyed hashes, 16 bytes each with the
//! queue) and reports a delivery it has seen. It only reports: the function
//! still gets the event, as the broker expects.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

/// How many events are remembered.
pub const CAPACITY: usize = 65_536;

/// The keys of the last [`CAPACITY`] events, oldest first.
pub struct Recent {
    hasher: RandomState,
    seen: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    keys: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            seen: Mutex::default(),
        }
    }
}

impl Recent {
    /// Remembers the event `(source, id)`; whether it was seen before.
    pub fn seen(&self, source: &str, id: &str) -> bool {
        let key = self.hasher.hash_one((source, id));
        let mut window = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !window.keys.insert(key) {
            return true;
        }
        window.order.push_back(key);
        if window.order.len() > CAPACITY
            && let Some(oldest) = window.order.pop_front()
        {
            window.keys.remove(&oldest);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_duplicate_until_it_falls_out_of_the_window() {
        let recent = Recent::default();
        assert!(!recent.seen("/s", "1"));
        assert!(recent.seen("/s", "1"));
        assert!(!recent.seen("/other", "1"), "source and id together");
        assert!(!recent.seen("/s", "2"));
        for id in 0..CAPACITY {
            recent.seen("/fill", &id.to_string());
        }
        assert!(!recent.seen("/s", "1"), "forgotten after CAPACITY others");
        let window = recent.seen.lock().unwrap();
        assert_eq!(window.order.len(), CAPACITY);
        assert_eq!(window.keys.len(), CAPACITY);
    }
}
