//! Compiling components off the request path.
//!
//! Every distinct component file is one [`CompileJob`]; functions that share
//! a file share its job and its artifact. Worker threads take jobs from a
//! queue in order, except that a request for a function whose component is
//! still queued moves that job to the front ([`Compiler::prioritize`]), and
//! the request waits for it ([`CompileJob::artifact`]). Artifacts found in
//! the cache take a fraction of a compile, so a warm cache empties the queue
//! quickly.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use shoal_runtime::{Artifact, LoadError, Provenance, Runtime};
use tokio::sync::watch;

/// How often a long compile reports its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// The outcome of a job: the artifact, or why the component was refused.
pub type Compiled = Result<Arc<Artifact>, Arc<LoadError>>;

/// Where a job is.
#[derive(Clone)]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Being compiled (or looked up in the cache) since then.
    Compiling(Instant),
    /// Finished.
    Done(Compiled),
}

/// One component file to compile.
pub struct CompileJob {
    path: PathBuf,
    /// How many functions use it (for the log).
    functions: usize,
    state: watch::Sender<JobState>,
}

impl CompileJob {
    /// A queued job for the component at `path`, used by `functions`
    /// functions.
    pub fn new(path: PathBuf, functions: usize) -> Arc<Self> {
        Arc::new(Self {
            path,
            functions,
            state: watch::Sender::new(JobState::Queued),
        })
    }

    /// The component file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the job is now.
    pub fn state(&self) -> JobState {
        self.state.borrow().clone()
    }

    /// Waits for the job to finish.
    pub async fn artifact(&self) -> Compiled {
        let mut state = self.state.subscribe();
        let done = state
            .wait_for(|s| matches!(s, JobState::Done(_)))
            .await
            .expect("the job's sender lives as long as the job");
        match &*done {
            JobState::Done(compiled) => compiled.clone(),
            JobState::Queued | JobState::Compiling(_) => unreachable!("waited for Done"),
        }
    }
}

/// The compile queue and its worker threads.
pub struct Compiler {
    runtime: Arc<Runtime>,
    queue: Mutex<VecDeque<Arc<CompileJob>>>,
    work: Condvar,
}

impl Compiler {
    /// Starts `workers` threads compiling `jobs` in order.
    pub fn start(runtime: Arc<Runtime>, jobs: Vec<Arc<CompileJob>>, workers: usize) -> Arc<Self> {
        let compiler = Arc::new(Self {
            runtime,
            queue: Mutex::new(jobs.into()),
            work: Condvar::new(),
        });
        for i in 0..workers.max(1) {
            let compiler = compiler.clone();
            std::thread::Builder::new()
                .name(format!("compile-{i}"))
                .spawn(move || compiler.work())
                .expect("cannot start a compile thread");
        }
        compiler
    }

    /// Moves `job` to the front of the queue if it is still waiting there.
    pub fn prioritize(&self, job: &Arc<CompileJob>) {
        let mut queue = self.lock();
        if let Some(at) = queue.iter().position(|queued| Arc::ptr_eq(queued, job))
            && at > 0
        {
            let job = queue.remove(at).expect("the position was just found");
            queue.push_front(job);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<CompileJob>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        loop {
            let job = {
                let mut queue = self.lock();
                loop {
                    match queue.pop_front() {
                        Some(job) => break job,
                        None => {
                            queue = self.work.wait(queue).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                }
            };
            job.state.send_replace(JobState::Compiling(Instant::now()));
            let compiled = self.runtime.compile(&job.path);
            match &compiled {
                Ok(artifact) => {
                    let how = match artifact.provenance() {
                        Provenance::Compiled => "component compiled",
                        Provenance::Cached => "component loaded from the artifact cache",
                        Provenance::Recompiled => {
                            "component compiled again (the cached artifact was unusable)"
                        }
                    };
                    tracing::info!(
                        component = %job.path.display(),
                        functions = job.functions,
                        elapsed_ms = artifact.elapsed().as_secs_f64() * 1e3,
                        "{how}"
                    );
                }
                Err(error) => tracing::error!(
                    component = %job.path.display(),
                    functions = job.functions,
                    %error,
                    "component refused"
                ),
            }
            job.state
                .send_replace(JobState::Done(compiled.map_err(Arc::new)));
        }
    }
}

/// Logs, every [`PROGRESS_INTERVAL`], how far compiling `jobs` has got,
/// until every job is done.
pub async fn report_progress(jobs: Vec<Arc<CompileJob>>) {
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let mut done = 0;
        let mut running = Vec::new();
        for job in &jobs {
            match job.state() {
                JobState::Done(_) => done += 1,
                JobState::Compiling(since) => running.push(format!(
                    "{} ({} s)",
                    job.path.display(),
                    since.elapsed().as_secs()
                )),
                JobState::Queued => {}
            }
        }
        if done == jobs.len() {
            return;
        }
        tracing::info!(
            done,
            total = jobs.len(),
            compiling = %running.join(", "),
            "still compiling components"
        );
    }
}
