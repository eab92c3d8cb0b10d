//! A process the harness started: its output, line by line, with the moment
//! each line was read, and its memory and CPU time from `/proc`.
//!
//! Output is read by two plain threads (one per pipe) so that a line's
//! timestamp does not wait on the async runtime that times requests.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::plan::OUTPUT_POLL;
use crate::proc_stats;

/// How many of the last output lines an error shows.
const TAIL_LINES: usize = 30;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// Standard output.
    Stdout,
    /// Standard error (where the servers log).
    Stderr,
}

/// One line of output.
#[derive(Debug, Clone)]
pub struct Line {
    /// When the harness read it.
    pub at: Instant,
    /// Where it came from.
    pub pipe: Pipe,
    /// The line, without its newline.
    pub text: String,
}

/// A child process, killed when dropped.
pub struct Process {
    name: String,
    child: Child,
    spawned: Instant,
    lines: Arc<Mutex<Vec<Line>>>,
}

impl Process {
    /// Starts `command` with both pipes captured; `name` identifies it in
    /// errors.
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        let spawned = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        collect(stdout, Pipe::Stdout, lines.clone());
        collect(stderr, Pipe::Stderr, lines.clone());
        Ok(Self {
            name: name.to_owned(),
            child,
            spawned,
            lines,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the process was spawned.
    pub fn spawned(&self) -> Instant {
        self.spawned
    }

    /// Waits for the first line for which `find` returns `Some`, and returns
    /// it with the line. Fails if the process exits first or `timeout`
    /// passes.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        find: impl Fn(&Line) -> Option<T>,
    ) -> anyhow::Result<(Line, T)> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|line| find(line).map(|value| (line.clone(), value)));
            if let Some(found) = found {
                return Ok(found);
            }
            if let Some(status) = self.child.try_wait()? {
                // Let the reader threads drain the pipes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!(
                    "{} exited with {status} before {what}; its last output:\n{}",
                    self.name,
                    self.tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not print {what} within {timeout:?}; its last output:\n{}",
                    self.name,
                    self.tail()
                );
            }
            tokio::time::sleep(OUTPUT_POLL).await;
        }
    }

    /// Every line read so far whose text passes `keep`.
    pub fn lines_matching(&self, keep: impl Fn(&str) -> bool) -> Vec<Line> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| keep(&l.text)).cloned().collect()
    }

    /// The last lines of output, for error messages.
    pub fn tail(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let start = lines.len().saturating_sub(TAIL_LINES);
        lines[start..]
            .iter()
            .map(|l| format!("    {}", l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        proc_stats::rss_kib(self.pid())
    }

    /// CPU time used so far, every thread included.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        proc_stats::process_cpu_time(self.pid())
    }

    /// The CPU time of each live thread, to the nanosecond: for spells of
    /// quiet, where [`Self::cpu_time`]'s 10 ms ticks are too coarse.
    pub fn thread_times(&self) -> anyhow::Result<proc_stats::ThreadTimes> {
        proc_stats::ThreadTimes::read(self.pid())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` line by line into `lines` on a thread of its own.
fn collect(pipe: impl Read + Send + 'static, from: Pipe, lines: Arc<Mutex<Vec<Line>>>) {
    std::thread::spawn(move || {
        for text in BufReader::new(pipe).lines().map_while(Result::ok) {
            let line = Line {
                at: Instant::now(),
                pipe: from,
                text,
            };
            lines.lock().unwrap().push(line);
        }
    });
}
