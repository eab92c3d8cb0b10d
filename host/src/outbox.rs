//! Answers held until their worker thread has nothing else ready.
//!
//! Most of the kernel's work in sending a small answer over loopback is
//! waking the client that sleeps on it. A worker thread that finds several
//! requests ready answers them one after another; if each answer went out
//! at once, each could wake the client again. So a connection's bytes are
//! held (up to 16 KiB; more is written at once) and the thread sends
//! all it holds together:
//!
//! - when it is about to park (tokio's `on_thread_park`: it has run every
//!   task it had);
//! - before the runtime's own work after an answer (a store's drop, the
//!   next instance), which first lets the thread's other ready requests
//!   answer ([`shoal_runtime::send_answers_with`]);
//! - when a guest yields its thread at an epoch tick, so a guest that
//!   computes for long keeps no other answer;
//! - once 16 connections hold bytes.
//!
//! So an answer waits at most for the requests its thread has ready, and
//! never for more than an epoch tick of a guest. The access lines of the
//! requests it answers are written after it is sent. Only tokio's worker
//! threads hold answers (they mark themselves when they first park); a
//! send that finds the socket full leaves the rest to the connection,
//! which is woken to send it before it reads or writes anything more.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

/// The most bytes one connection holds; a larger answer is written at once.
const MAX_HELD: usize = 16 * 1024;

/// The most connections one thread holds bytes for before it sends them.
const MAX_CONNECTIONS_HELD: usize = 16;

thread_local! {
    static HOLDS: Cell<bool> = const { Cell::new(false) };
    static HELD: RefCell<Vec<Arc<Outbox>>> = const { RefCell::new(Vec::new()) };
}

/// Makes this thread hold answers from now on, and sends what it holds:
/// for the runtime's `on_thread_park`.
pub fn before_park() {
    HOLDS.set(true);
    send_held();
}

/// Whether this thread holds answers now.
pub fn holds_answers() -> bool {
    HELD.with_borrow(|held| !held.is_empty())
}

/// Sends every answer this thread holds, then writes their access lines.
pub fn send_held() {
    let mut held = HELD.take();
    if held.is_empty() {
        return;
    }
    for outbox in held.drain(..) {
        outbox.lock().send_held();
    }
    HELD.with_borrow_mut(|now| {
        if now.is_empty() {
            *now = held;
        }
    });
    crate::telemetry::record::write_held_lines();
}

/// The sending side of one connection.
pub struct Outbox(Mutex<State>);

struct State {
    half: OwnedWriteHalf,
    bytes: Vec<u8>,
    /// In some thread's list of held answers.
    held: bool,
    /// Woken when held bytes could not all be sent.
    waker: Option<Waker>,
}

impl Outbox {
    pub fn new(half: OwnedWriteHalf) -> Arc<Self> {
        Arc::new(Self(Mutex::new(State {
            half,
            bytes: Vec::new(),
            held: false,
            waker: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds `bufs` if this thread holds answers and they fit, else writes
    /// them (after anything held).
    pub fn poll_write(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        let mut state = self.lock();
        // Bytes left over by a send that found no room (held, but in no
        // list) go first, and at once.
        let left_over = !state.held && !state.bytes.is_empty();
        if HOLDS.get() && !left_over && state.bytes.len() + total <= MAX_HELD {
            state.bytes.reserve(total);
            for buf in bufs {
                state.bytes.extend_from_slice(buf);
            }
            if !state
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waker = Some(cx.waker().clone());
            }
            if !state.held {
                state.held = true;
                drop(state);
                let full = HELD.with_borrow_mut(|held| {
                    held.push(self.clone());
                    held.len() >= MAX_CONNECTIONS_HELD
                });
                if full {
                    send_held();
                }
            }
            return Poll::Ready(Ok(total));
        }
        ready!(state.poll_send(cx))?;
        Pin::new(&mut state.half).poll_write_vectored(cx, bufs)
    }

    /// Sends what a send of held bytes left over for want of room: `false`
    /// at once if it left nothing. Ready once nothing is left unsent that
    /// no thread will send: the connection's flush.
    pub fn poll_left_over(&self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut state = self.lock();
        if state.held || state.bytes.is_empty() {
            return Poll::Ready(Ok(false));
        }
        state.poll_send(cx).map_ok(|()| true)
    }

    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        ready!(state.poll_send(cx))?;
        Pin::new(&mut state.half).poll_shutdown(cx)
    }
}

impl State {
    /// Sends what is held without waiting; the connection's task is woken
    /// to send the rest.
    fn send_held(&mut self) {
        self.held = false;
        while !self.bytes.is_empty() {
            match self.half.try_write(&self.bytes) {
                Ok(n) if n == self.bytes.len() => {
                    // An idle connection keeps no buffer.
                    self.bytes = Vec::new();
                }
                Ok(n) if n > 0 => {
                    self.bytes.drain(..n);
                }
                _ => {
                    if let Some(waker) = self.waker.take() {
                        waker.wake();
                    }
                    return;
                }
            }
        }
    }

    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.bytes.is_empty() {
            let n = ready!(Pin::new(&mut self.half).poll_write(cx, &self.bytes))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.bytes.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A loopback connection whose sockets hold little: the server's side
    /// (its send buffer) and the client's (its receive buffer).
    async fn small_sockets() -> (TcpStream, TcpStream) {
        let listener = TcpSocket::new_v4().unwrap();
        listener.set_send_buffer_size(4096).unwrap();
        listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = listener.listen(1).unwrap();
        let client = TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let (client, accepted) = tokio::join!(
            client.connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        (accepted.unwrap().0, client.unwrap())
    }

    #[tokio::test]
    async fn held_bytes_that_find_no_room_wake_their_connection_and_all_arrive() {
        let (server, mut client) = small_sockets().await;
        let (_read, write) = server.into_split();
        let outbox = Outbox::new(write);
        let woken = Arc::new(Counted::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        before_park();

        // Answers held and sent until one finds the sockets full.
        let answer: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while outbox.lock().bytes.is_empty() {
            assert!(sent < 1000 * answer.len(), "the sockets never filled");
            let held = outbox.poll_write(&mut cx, &[io::IoSlice::new(&answer)]);
            assert!(matches!(held, Poll::Ready(Ok(n)) if n == answer.len()));
            assert!(holds_answers());
            sent += answer.len();
            send_held();
        }
        assert!(!holds_answers());
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);

        // Woken, the connection sends the rest once the client reads.
        let reader = tokio::spawn(async move {
            let mut received = vec![0; sent];
            client.read_exact(&mut received).await.unwrap();
            received
        });
        let sent_rest = std::future::poll_fn(|cx| outbox.poll_left_over(cx)).await;
        assert!(sent_rest.unwrap());
        let received = reader.await.unwrap();
        assert!(received.chunks(answer.len()).all(|chunk| chunk == answer));
    }
}
