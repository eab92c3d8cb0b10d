//! Compiling components off the request path.
//!
//! A [`CompileJob`] compiles one component *content* (its digest): functions
//! whose components hold the same bytes share the job and its artifact,
//! whatever paths name them, and a job lives as long as some function (or a
//! change being made) holds it. Asking for a digest whose job is alive
//! returns that job, so the same bytes never compile twice at once.
//!
//! Worker threads take jobs from a queue in order, except that a job someone
//! waits for (a request for a function still compiling, a change waiting to
//! be published) moves to the front ([`Compiler::prioritize`]). Jobs may be
//! queued at any time; the workers run until [`Compiler::stop`].

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use shoal_runtime::{Artifact, ComponentSource, Digest, LoadError, Provenance, Runtime};

use crate::manifest::FunctionName;
use tokio::sync::watch;

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

/// One component content to compile.
pub struct CompileJob {
    source: ComponentSource,
    /// The function it was first compiled for, named in its log lines
    /// (none for an upload).
    function: Option<FunctionName>,
    state: watch::Sender<JobState>,
}

impl CompileJob {
    fn new(source: ComponentSource, function: Option<&FunctionName>) -> Arc<Self> {
        Arc::new(Self {
            source,
            function: function.cloned(),
            state: watch::Sender::new(JobState::Queued),
        })
    }

    /// Where the job is now.
    pub fn state(&self) -> JobState {
        self.state.borrow().clone()
    }

    /// Whether it finished with an error.
    fn failed(&self) -> bool {
        matches!(&*self.state.borrow(), JobState::Done(Err(_)))
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

/// How far the jobs alive have got ([`Compiler::progress`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Jobs finished, with an artifact or an error.
    pub done: usize,
    /// Jobs alive: each component content once, however many functions
    /// (or changes being made) hold it.
    pub total: usize,
    /// The components being compiled now, and for how long so far.
    pub compiling: Vec<(PathBuf, Duration)>,
}

/// The compile queue, its worker threads, and the jobs alive by digest.
pub struct Compiler {
    runtime: Arc<Runtime>,
    queue: Mutex<Queue>,
    work: Condvar,
    jobs: Mutex<HashMap<Digest, Weak<CompileJob>>>,
}

struct Queue {
    jobs: VecDeque<Arc<CompileJob>>,
    stopped: bool,
}

impl Compiler {
    /// A compiler with an empty queue; [`Compiler::start`] starts its
    /// workers.
    pub fn new(runtime: Arc<Runtime>) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                stopped: false,
            }),
            work: Condvar::new(),
            jobs: Mutex::new(HashMap::new()),
        })
    }

    /// Starts `workers` threads, which compile queued jobs until
    /// [`Compiler::stop`].
    pub fn start(self: &Arc<Self>, workers: usize) {
        for i in 0..workers.max(1) {
            let compiler = self.clone();
            std::thread::Builder::new()
                .name(format!("compile-{i}"))
                .spawn(move || compiler.work())
                .expect("cannot start a compile thread");
        }
    }

    /// Lets the workers finish the job in hand, then stop.
    pub fn stop(&self) {
        self.lock_queue().stopped = true;
        self.work.notify_all();
    }

    /// The job compiling `source`'s content (for `function`, if it is
    /// compiled for one): the one alive already, or a new one, queued. A
    /// job that failed is not reused: the content is tried again.
    pub fn job(&self, source: ComponentSource, function: Option<&FunctionName>) -> Arc<CompileJob> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = jobs.get(&source.digest).and_then(Weak::upgrade)
            && !job.failed()
        {
            return job;
        }
        jobs.retain(|_, job| job.strong_count() > 0);
        let job = CompileJob::new(source, function);
        jobs.insert(job.source.digest, Arc::downgrade(&job));
        drop(jobs);
        self.lock_queue().jobs.push_back(job.clone());
        self.work.notify_one();
        job
    }

    /// How far the jobs alive have got. Costs the number of distinct
    /// components, not of the functions that use them.
    pub fn progress(&self) -> Progress {
        let jobs: Vec<_> = {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.values().filter_map(Weak::upgrade).collect()
        };
        let mut progress = Progress {
            total: jobs.len(),
            ..Progress::default()
        };
        for job in &jobs {
            match job.state() {
                JobState::Done(_) => progress.done += 1,
                JobState::Compiling(since) => progress
                    .compiling
                    .push((job.source.path.clone(), since.elapsed())),
                JobState::Queued => {}
            }
        }
        progress
    }

    /// Moves `job` to the front of the queue if it is still waiting there.
    pub fn prioritize(&self, job: &Arc<CompileJob>) {
        let mut queue = self.lock_queue();
        if let Some(at) = queue
            .jobs
            .iter()
            .position(|queued| Arc::ptr_eq(queued, job))
            && at > 0
        {
            let job = queue.jobs.remove(at).expect("the position was just found");
            queue.jobs.push_front(job);
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        loop {
            let job = {
                let mut queue = self.lock_queue();
                loop {
                    if queue.stopped {
                        return;
                    }
                    match queue.jobs.pop_front() {
                        Some(job) => break job,
                        None => queue = self.work.wait(queue).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            };
            // Nobody holds the job any more (its change was dropped, its
            // functions removed): nothing to do.
            if Arc::strong_count(&job) == 1 {
                continue;
            }
            job.state.send_replace(JobState::Compiling(Instant::now()));
            let compiled = self.runtime.compile(&job.source);
            log_outcome(&job, &compiled);
            job.state
                .send_replace(JobState::Done(compiled.map_err(Arc::new)));
        }
    }
}

fn log_outcome(job: &CompileJob, compiled: &Result<Arc<Artifact>, LoadError>) {
    let source = &job.source;
    let function = job.function.as_ref().map(tracing::field::display);
    match compiled {
        Ok(artifact) => {
            let how = match artifact.provenance() {
                Provenance::Compiled => "component compiled",
                Provenance::Cached => "component loaded from the artifact cache",
                Provenance::Precompiled => "component loaded from the precompiled artifacts",
                Provenance::Recompiled => {
                    "component compiled again (the cached artifact was unusable)"
                }
                Provenance::PrecompiledElsewhere => {
                    tracing::warn!(
                        function,
                        component = %source.path.display(),
                        digest = %source.digest,
                        "precompiled for other CPU features or engine settings; compiling here"
                    );
                    "component compiled"
                }
            };
            tracing::info!(
                function,
                component = %source.path.display(),
                digest = %source.digest,
                elapsed_ms = artifact.elapsed().as_secs_f64() * 1e3,
                "{how}"
            );
        }
        Err(error) => tracing::error!(
            function,
            component = %source.path.display(),
            digest = %source.digest,
            %error,
            "component refused"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_runtime::RuntimeConfig;

    /// A source whose bytes are not a component: its job ends in an error
    /// at once, which counts as done.
    fn not_a_component(dir: &std::path::Path, name: &str) -> ComponentSource {
        let path = dir.join(name);
        std::fs::write(&path, name).unwrap();
        ComponentSource {
            digest: Digest::of(name.as_bytes()),
            path,
        }
    }

    #[tokio::test]
    async fn progress_counts_each_content_once_while_something_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(&RuntimeConfig::new(dir.path().join("cache"))).unwrap();
        let compiler = Compiler::new(Arc::new(runtime));
        let a = not_a_component(dir.path(), "a");
        let first = compiler.job(a.clone(), None);
        // A second function of the same content shares the job.
        let second = compiler.job(a, None);
        let other = compiler.job(not_a_component(dir.path(), "b"), None);
        let queued = compiler.progress();
        assert_eq!((queued.done, queued.total), (0, 2), "{queued:?}");
        assert!(queued.compiling.is_empty(), "{queued:?}");

        compiler.start(1);
        for job in [&first, &other] {
            assert!(job.artifact().await.is_err());
        }
        // The one worker lets go of a job after its outcome is sent: once
        // it has finished a third one, it holds neither of the others.
        let last = compiler.job(not_a_component(dir.path(), "c"), None);
        assert!(last.artifact().await.is_err());
        assert_eq!(
            compiler.progress(),
            Progress {
                done: 3,
                total: 3,
                compiling: Vec::new()
            }
        );

        // Nothing holds `other` any more: it is not counted.
        drop(other);
        drop(first);
        let left = compiler.progress();
        assert_eq!((left.done, left.total), (2, 2), "{left:?}");
        drop(second);
        let left = compiler.progress();
        assert_eq!((left.done, left.total), (1, 1), "{left:?}");
        compiler.stop();
    }
}
