//! The compiled code of functions that scaled to zero lately, kept mapped.
//!
//! When the last warm function of a component lets go of its code (it
//! scaled to zero, or was replaced), the mapping does not go at once: it
//! joins the code let go of most recently, which is kept up to a budget in
//! bytes (`RuntimeConfig::keep_code`), the oldest leaving first. What is
//! kept is the component linked, so a cold start of a function whose code
//! is kept skips both loading its artifact (reading the component's
//! metadata and mapping its code, most of a cold start) and linking it.
//! Only code is kept, never an instance: every request still gets a fresh
//! one. A function warmed again takes its code back out, so the budget
//! counts only code no warm function holds, and an artifact that goes (no
//! function uses its component any more) takes its kept code with it.

use std::sync::Mutex;

use lru::LruCache;

use crate::source::Digest;

/// Code let go of lately, by component digest, the oldest first out.
pub(crate) struct KeptCode<C> {
    budget: u64,
    kept: Mutex<Kept<C>>,
}

struct Kept<C> {
    code: LruCache<Digest, (C, u64)>,
    bytes: u64,
}

impl<C> KeptCode<C> {
    /// Keeps `budget` bytes of code at most; 0 keeps none.
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            budget,
            kept: Mutex::new(Kept {
                code: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// Keeps `code`, of `bytes`, as the most recent; the oldest code leaves
    /// until the rest fits the budget. Code larger than the whole budget is
    /// not kept.
    pub(crate) fn keep(&self, digest: Digest, code: C, bytes: u64) {
        if bytes > self.budget {
            return;
        }
        let mut leaving = Vec::new();
        {
            let mut kept = self.lock();
            if let Some((old, old_bytes)) = kept.code.put(digest, (code, bytes)) {
                kept.bytes -= old_bytes;
                leaving.push(old);
            }
            kept.bytes += bytes;
            while kept.bytes > self.budget {
                let Some((_, (old, old_bytes))) = kept.code.pop_lru() else {
                    break;
                };
                kept.bytes -= old_bytes;
                leaving.push(old);
            }
        }
        // Unmapping takes a system call each: not under the lock.
        drop(leaving);
    }

    /// Takes `digest`'s code out, if it is kept: a function warms it again.
    pub(crate) fn take(&self, digest: &Digest) -> Option<C> {
        let mut kept = self.lock();
        let (code, bytes) = kept.code.pop(digest)?;
        kept.bytes -= bytes;
        Some(code)
    }

    /// Drops `digest`'s code if `is_it` says it is the code meant (its
    /// artifact is going).
    pub(crate) fn forget(&self, digest: &Digest, is_it: impl FnOnce(&C) -> bool) {
        let gone = {
            let mut kept = self.lock();
            if !kept.code.peek(digest).is_some_and(|(code, _)| is_it(code)) {
                return;
            }
            let (code, bytes) = kept.code.pop(digest).expect("just peeked");
            kept.bytes -= bytes;
            code
        };
        drop(gone);
    }

    /// How many components' code is kept, and its bytes.
    pub(crate) fn size(&self) -> (usize, u64) {
        let kept = self.lock();
        (kept.code.len(), kept.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept<C>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn the_oldest_code_leaves_first_once_the_budget_is_full() {
        let kept = KeptCode::new(100);
        kept.keep(digest(1), 1, 40);
        kept.keep(digest(2), 2, 40);
        assert_eq!(kept.size(), (2, 80));
        // The third does not fit beside both: the first let go of leaves.
        kept.keep(digest(3), 3, 40);
        assert_eq!(kept.size(), (2, 80));
        assert_eq!(kept.take(&digest(1)), None);
        assert_eq!(kept.take(&digest(2)), Some(2));
        assert_eq!(kept.take(&digest(3)), Some(3));
        assert_eq!(kept.size(), (0, 0));
    }

    #[test]
    fn keeping_code_again_makes_it_the_most_recent() {
        let kept = KeptCode::new(100);
        kept.keep(digest(1), 1, 40);
        kept.keep(digest(2), 2, 40);
        kept.keep(digest(1), 1, 40);
        kept.keep(digest(3), 3, 40);
        assert_eq!(kept.size(), (2, 80));
        assert_eq!(kept.take(&digest(2)), None);
        assert_eq!(kept.take(&digest(1)), Some(1));
    }

    #[test]
    fn code_larger_than_the_budget_is_not_kept_and_a_zero_budget_keeps_none() {
        let kept = KeptCode::new(100);
        kept.keep(digest(1), 1, 60);
        kept.keep(digest(2), 2, 101);
        assert_eq!(kept.size(), (1, 60));
        assert_eq!(kept.take(&digest(1)), Some(1));

        let none = KeptCode::new(0);
        none.keep(digest(1), 1, 1);
        assert_eq!(none.size(), (0, 0));
        assert_eq!(none.take(&digest(1)), None);
    }

    #[test]
    fn an_artifact_that_goes_forgets_only_its_own_code() {
        let kept = KeptCode::new(100);
        kept.keep(digest(1), 7, 10);
        // Another mapping of the same component: left alone.
        kept.forget(&digest(1), |code| *code == 8);
        assert_eq!(kept.size(), (1, 10));
        kept.forget(&digest(1), |code| *code == 7);
        assert_eq!(kept.size(), (0, 0));
        kept.forget(&digest(2), |_| true);
        assert_eq!(kept.size(), (0, 0));
    }
}
