//! The runtime's work after an answer (a store's drop, the next instance)
//! and a guest that yields its thread let the server send first: a server
//! that holds answers to send them together (the host's outbox) says how.

use std::sync::OnceLock;

static SEND_ANSWERS: OnceLock<fn()> = OnceLock::new();

/// Sets what sends the answers the current thread holds; the first call
/// wins. Without it, nothing waits for answers.
pub fn send_answers_with(send: fn()) {
    let _ = SEND_ANSWERS.set(send);
}

/// Before work after an answer: lets the thread's other ready tasks answer
/// first (the task is polled again once the thread has run out of them),
/// then sends what they hold.
pub(crate) async fn answers_first() {
    if let Some(send) = SEND_ANSWERS.get() {
        tokio::task::yield_now().await;
        send();
    }
}

/// When a guest yields its thread: what the thread holds is sent, so that
/// a guest that computes for long does not keep others' answers.
pub(crate) fn guest_yields() {
    if let Some(send) = SEND_ANSWERS.get() {
        send();
    }
}
