//! The log's writer: whoever logs appends its line to a queue in memory and
//! goes on; a thread of its own writes the queue to stderr.
//!
//! The thread takes everything queued at once and writes it in one call,
//! then lets [`GATHER`] pass before it looks again, so that under load the
//! lines of many requests share one write and one wake-up. A line logged
//! while the thread sleeps on an empty queue wakes it at once: a lone line
//! (a host at rest) is not held back. Nothing polls; an empty queue costs
//! nothing.
//!
//! The queue holds [`logs::LOG_QUEUE_LINES`](super::logs::LOG_QUEUE_LINES)
//! lines at most. If stderr stops being read (a stalled pipe, a collector
//! gone), the queue fills, and further lines are dropped and counted
//! ([`dropped_lines`]) rather than stopping whoever logs.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::Duration;

/// How long the writing thread lets lines gather after a write.
const GATHER: Duration = Duration::from_millis(1);

/// The room the queue keeps once written; a burst's more is given back.
const KEPT_CAPACITY: usize = 64 * 1024;

/// How long dropping the [`Guard`] waits for queued lines to be written.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Lines dropped by every writer of this process.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped so far because their output could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Where log lines are queued; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a line lands in an empty queue the thread sleeps on,
    /// and on shutdown.
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    lines: usize,
    max_lines: usize,
    /// The writing thread waits on `wake` for a line.
    asleep: bool,
    closed: bool,
}

/// Writes the lines still queued when dropped (for a second at most), and
/// stops the writing thread.
pub struct Guard {
    shared: Arc<Shared>,
    /// Disconnected when the writing thread ends.
    ended: mpsc::Receiver<()>,
}

impl LogWriter {
    /// Starts the thread that writes to `output`, queueing `max_lines` at
    /// most.
    pub fn start(output: impl Write + Send + 'static, max_lines: usize) -> (Self, Guard) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                max_lines,
                ..Queue::default()
            }),
            wake: Condvar::new(),
        });
        let (ended_tx, ended) = mpsc::channel();
        let writing = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                writing.write_all_to(output);
                drop(ended_tx);
            })
            .expect("cannot start the log writer thread");
        let guard = Guard {
            shared: shared.clone(),
            ended,
        };
        (Self { shared }, guard)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a queue of whole lines.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The writing thread: until closed and empty, takes the queue and
    /// writes it.
    fn write_all_to(&self, mut output: impl Write) {
        let mut batch = Vec::new();
        loop {
            {
                let mut queue = self.lock();
                while queue.bytes.is_empty() && !queue.closed {
                    queue.asleep = true;
                    queue = self
                        .wake
                        .wait(queue)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                queue.asleep = false;
                if queue.bytes.is_empty() {
                    return;
                }
                std::mem::swap(&mut batch, &mut queue.bytes);
                queue.lines = 0;
            }
            // stderr closed by whoever read it: the lines are lost, and
            // there is nowhere to say so.
            let _ = output.write_all(&batch).and_then(|()| output.flush());
            batch.clear();
            // The two buffers take turns as the queue.
            batch.shrink_to(KEPT_CAPACITY);
            std::thread::sleep(GATHER);
        }
    }
}

impl Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut queue = self.shared.lock();
        if queue.lines >= queue.max_lines {
            drop(queue);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        queue.bytes.extend_from_slice(line);
        queue.lines += 1;
        let wake = std::mem::take(&mut queue.asleep);
        drop(queue);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let _ = self.ended.recv_timeout(FLUSH_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records each write, and can be held: a write then
    /// waits until it is let go.
    #[derive(Clone, Default)]
    struct Output {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        held: Arc<Mutex<()>>,
    }

    impl Write for Output {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _held = self.held.lock().unwrap();
            self.writes.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(writer: &LogWriter, line: &str) {
        let mut writer = writer;
        writer.write_all(line.as_bytes()).unwrap();
    }

    /// Waits until the writing thread has taken what is queued.
    fn wait_taken(writer: &LogWriter) {
        while !writer.shared.lock().bytes.is_empty() {
            std::thread::yield_now();
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let output = Output::default();
        let (writer, guard) = LogWriter::start(output.clone(), 100);
        let lines: Vec<String> = (0..50).map(|i| format!("line {i}\n")).collect();
        for line in &lines {
            log(&writer, line);
        }
        drop(guard);
        let written = output.writes.lock().unwrap().concat();
        assert_eq!(String::from_utf8(written).unwrap(), lines.concat());
    }

    #[test]
    fn lines_queued_while_a_write_is_under_way_go_out_together() {
        let output = Output::default();
        let held = output.held.lock().unwrap();
        let (writer, guard) = LogWriter::start(output.clone(), 100);
        log(&writer, "first\n");
        // The thread takes the first line, then waits in its write.
        wait_taken(&writer);
        for i in 0..20 {
            log(&writer, &format!("line {i}\n"));
        }
        drop(held);
        drop(guard);
        let writes = output.writes.lock().unwrap();
        assert_eq!(
            writes.len(),
            2,
            "one write for the first line, one for the rest"
        );
        assert_eq!(writes[1].iter().filter(|&&b| b == b'\n').count(), 20);
    }

    #[test]
    fn the_room_a_burst_took_is_given_back_once_written() {
        let output = Output::default();
        let held = output.held.lock().unwrap();
        let (writer, guard) = LogWriter::start(output.clone(), 10_000);
        log(&writer, "first\n");
        wait_taken(&writer);
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..1000 {
            log(&writer, &line);
        }
        assert!(writer.shared.lock().bytes.capacity() >= 1000 * 1024);
        drop(held);
        // The burst is taken; the next line goes to the other buffer, and
        // once that is taken, the burst's buffer is the queue again.
        wait_taken(&writer);
        log(&writer, "quiet\n");
        wait_taken(&writer);
        assert!(writer.shared.lock().bytes.capacity() <= KEPT_CAPACITY);
        drop(guard);
    }

    #[test]
    fn a_stalled_output_drops_lines_past_the_queue_and_counts_them() {
        let output = Output::default();
        let held = output.held.lock().unwrap();
        let (writer, guard) = LogWriter::start(output.clone(), 10);
        log(&writer, "first\n");
        wait_taken(&writer);
        let before = dropped_lines();
        // The queue holds 10: those are kept, the 5 past them dropped,
        // and logging never waits for the output.
        for i in 0..15 {
            log(&writer, &format!("line {i}\n"));
        }
        assert_eq!(dropped_lines() - before, 5);
        drop(held);
        drop(guard);
        let written = String::from_utf8(output.writes.lock().unwrap().concat()).unwrap();
        assert_eq!(written.lines().count(), 11, "{written}");
        assert!(written.ends_with("line 9\n"), "{written}");
    }
}
