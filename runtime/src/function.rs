//! A warm function, and one request through one fresh instance of it.
//!
//! Warming does everything that does not depend on the request: mapping the
//! compiled artifact, resolving imports against the linker
//! ([`InstancePre`]) and locating the `wasi:http/incoming-handler` export
//! (done once for all the warm functions of a component, and kept with its
//! code when they scale to zero). A request then only creates a store,
//! instantiates into a pooled slot and calls the handler; after the first
//! request, the instance is usually made already ([`crate::ready`]).
//!
//! The request's own task runs the guest until the response head is ready.
//! A guest that has not returned by then (it is still writing its body)
//! goes on in a task of its own. The response body ends only when the guest
//! has returned: if the guest traps half-way through a body, the body ends
//! with an error (the client sees a cut connection, not a short body that
//! looks complete). A body dropped early stops the guest (its client went
//! away), unless the whole length its head declared was sent: HTTP/1 lets
//! go of such a body at once, and the guest runs on to its end.
//!
//! [`InstancePre`]: wasmtime::component::InstancePre

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tracing::Instrument;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::artifact::{Artifact, Mapped};
use crate::engine::Runtime;
use crate::error::{GuestFailure, HandleError, LoadError};
use crate::guest_log::OutputLimits;
use crate::limits::{EpochHandle, LimitedBody, Limits, MemoryBudget, Refusal, on_epoch_tick};
use crate::outbound::{Outbound, OutboundPolicy};
use crate::ready::ReadySlot;
use crate::reuse::{InstancePool, Reusable};
use crate::store::{StoreState, StoreTemplate};

/// What a function adds to its component: its name, environment and
/// instance policy.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The function's name, used in logs and errors.
    pub name: String,
    /// The only environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// How many requests one instance may serve, one after the other; 1 (a
    /// fresh instance per request) unless the function opts into reuse.
    pub max_instance_reuse: NonZeroU32,
    /// The memory and time each request may use.
    pub limits: Limits,
    /// The origins it may call.
    pub outbound: OutboundPolicy,
    /// What its guests may write to stdout and stderr, shared by all its
    /// instances.
    pub output: Arc<OutputLimits>,
}

/// A warm function: its component mapped, linked and pre-instantiated.
pub struct Function {
    pre: ProxyPre<StoreState>,
    template: Arc<StoreTemplate>,
    /// Idle instances, when the function reuses them.
    reuse: Option<Arc<InstancePool>>,
    /// The fresh instance made for its next request, when it does not
    /// reuse them (and the host makes them ahead).
    ready: Option<Arc<ReadySlot>>,
    limits: Limits,
    /// Keeps the epoch advancing while its guests run.
    epoch: EpochHandle,
    /// Keeps the artifact mapped and linked for as long as the function is
    /// warm.
    code: Mapped,
}

impl Function {
    pub(crate) fn warm(
        runtime: &Runtime,
        artifact: &Arc<Artifact>,
        spec: FunctionSpec,
    ) -> Result<Self, LoadError> {
        let code = artifact.map(runtime.engine(), runtime.linker())?;
        let pre = code.linked().clone();
        Ok(Self {
            pre,
            template: Arc::new(StoreTemplate {
                function: Arc::from(spec.name),
                env: spec.env,
                outbound: Arc::new(spec.outbound),
                client: runtime.outbound_client().clone(),
                budget: runtime.memory_budget().clone(),
                output: spec.output,
            }),
            reuse: (spec.max_instance_reuse.get() > 1).then(|| {
                Arc::new(InstancePool::new(
                    spec.max_instance_reuse.get(),
                    runtime.idle().clone(),
                ))
            }),
            ready: (spec.max_instance_reuse.get() == 1 && runtime.ready().cap() > 0)
                .then(|| Arc::new(ReadySlot::new(runtime.ready().clone()))),
            limits: spec.limits,
            epoch: runtime.epoch(),
            code,
        })
    }

    /// Whether warming it loaded its code from the artifact's file, rather
    /// than finding it still mapped (kept since it scaled to zero, or held
    /// by another warm function of the same component).
    pub fn loaded_code(&self) -> bool {
        self.code.loaded()
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.template.function
    }

    /// Instances waiting for a request: the idle ones of a function that
    /// reuses instances, else the fresh one made ahead, if it is made.
    pub fn idle_instances(&self) -> usize {
        match (&self.reuse, &self.ready) {
            (Some(pool), _) => pool.idle(),
            (None, Some(ready)) => usize::from(ready.is_ready()),
            (None, None) => 0,
        }
    }

    /// Runs one request through a fresh instance (or an idle one, if the
    /// function reuses instances).
    ///
    /// Returns as soon as the guest has sent the response head; the body
    /// streams from the guest as the caller reads it. `request_id` tags the
    /// guest's log lines. The guest runs in the caller's polls, so its
    /// lines are logged in whatever those polls are in (a tracing span, a
    /// request's log). `held` is dropped once the instance is done with
    /// the request (dropped, or back among the idle ones), which can be
    /// after the caller has read the whole response: give it what counts
    /// instances.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        request_id: &str,
        held: impl Send + 'static,
    ) -> Result<http::Response<GuestBody>, HandleError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let deadline = Instant::now() + self.limits.timeout;
        // Carried onto the guest's outbound calls: none for a function
        // that may make none.
        let trace_headers = if self.template.outbound.allows_none() {
            HeaderMap::new()
        } else {
            Outbound::trace_headers(request.headers())
        };
        let body_exceeded = Arc::new(AtomicBool::new(false));
        let request =
            request.map(|body| LimitedBody::new(body, self.limits.max_body, body_exceeded.clone()));
        let waiting = match (&self.reuse, &self.ready) {
            (Some(pool), _) => pool.take(),
            (None, Some(ready)) => ready.take(),
            (None, None) => None,
        };
        let (mut store, proxy, uses) = match waiting {
            Some(Reusable {
                mut store,
                proxy,
                uses,
            }) => {
                store
                    .data_mut()
                    .begin_request(request_id, trace_headers, deadline);
                // The epoch moved on while the instance waited: count this
                // request's ticks from now.
                store.set_epoch_deadline(1);
                (store, Some(proxy), uses)
            }
            None => {
                let store = new_store(
                    &self.pre,
                    &self.template,
                    self.limits,
                    request_id,
                    trace_headers,
                    deadline,
                );
                (store, None, 0)
            }
        };
        let (response_tx, mut response_rx) = oneshot::channel();
        let mut http = store.data_mut().http();
        let request = http
            .new_incoming_request(Scheme::Http, request)
            .map_err(HandleError::Setup)?;
        let outparam = http
            .new_response_outparam(response_tx)
            .map_err(HandleError::Setup)?;

        let pre = self.pre.clone();
        let pool = self.reuse.clone();
        let limits = self.limits;
        let budget = self.template.budget.clone();
        let run_guest = async move {
            let run = async {
                let proxy = match proxy {
                    Some(proxy) => proxy,
                    None => pre.instantiate_async(&mut store).await?,
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, outparam)
                    .await?;
                Ok::<_, wasmtime::Error>(proxy)
            };
            // The epoch callback stops a guest that computes past the
            // deadline; this timer stops one that waits past it.
            let failure = match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(Ok(proxy)) => {
                    let Some(pool) = pool else {
                        return Ok(Some(store));
                    };
                    let uses = uses + 1;
                    pool.put(Reusable { store, proxy, uses });
                    return Ok(None);
                }
                Ok(Err(error)) => classify(error, &store, &limits, &budget),
                Err(_elapsed) => GuestFailure::Timeout(limits.timeout),
            };
            Err(failure)
        };
        // From instantiation (which may run the guest's start code) to its
        // end, deadlines must be enforced.
        let running = self.epoch.running();
        let make_next = MakeNext(self.ready.as_ref().map(|ready| {
            (
                Arc::downgrade(ready),
                MakeInstance {
                    pre: self.pre.clone(),
                    template: self.template.clone(),
                    limits: self.limits,
                    epoch: self.epoch.clone(),
                },
            )
        }));
        let mut guest = GuestTask::Inline(Box::pin(
            async move {
                let outcome = run_guest.await;
                drop(running);
                match outcome {
                    Ok(Some(store)) => {
                        // Dropping a store resets its memory, the largest
                        // part of the drop. A task of its own does it after
                        // the answer is written (the worker runs the task
                        // once the connection's task waits again, and the
                        // other requests it has ready have answered), then
                        // makes the next request's instance.
                        tokio::spawn(async move {
                            crate::background::answers_first().await;
                            drop(store);
                            drop(held);
                            make_next.run().await;
                        });
                        Ok(())
                    }
                    // The instance (owned by `run_guest`) is gone, or back
                    // among the idle ones; a failed one's successor is
                    // made when `make_next` drops.
                    outcome => {
                        drop(held);
                        outcome.map(|_| ())
                    }
                }
            }
            .in_current_span(),
        ));

        // The guest runs until it answers; `Err` if it ended without.
        let answered = std::future::poll_fn(|cx| {
            if guest.poll_run(cx).is_ready() {
                // Its answer is in the channel now or never will be. Not
                // polled: once the task has used up tokio's budget of work
                // per poll, a channel's poll says Pending even when a value
                // waits (a batch of events served by instances that answer
                // at once runs that long).
                return Poll::Ready(response_rx.try_recv().map_err(|_| ()));
            }
            response_rx.poll_unpin(cx).map_err(|_| ())
        })
        .await;
        // Whatever the guest made of a body cut off at the limit, the answer
        // is 413 (unless its response head was already on its way).
        if body_exceeded.load(Ordering::Relaxed) {
            return Err(HandleError::BodyTooLarge(self.limits.max_body));
        }
        match answered {
            Ok(Ok(response)) => {
                guest.detach();
                let unsent = content_length(response.headers());
                Ok(response.map(|body| GuestBody {
                    body,
                    guest: Some(guest),
                    unsent,
                }))
            }
            Ok(Err(code)) => Err(HandleError::GuestError(code)),
            // The guest dropped the outparam, or ended without setting it:
            // it returned or failed first.
            Err(()) => match (&mut guest).await {
                Ok(()) => Err(HandleError::NoResponse),
                Err(failure) => Err(HandleError::Failed(failure)),
            },
        }
    }
}

/// A new store for one instance of a function.
fn new_store(
    pre: &ProxyPre<StoreState>,
    template: &StoreTemplate,
    limits: Limits,
    request_id: &str,
    trace_headers: HeaderMap,
    deadline: Instant,
) -> Store<StoreState> {
    let state = StoreState::new(template, request_id, trace_headers, limits.memory, deadline);
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|state| state.limiter());
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|store| Ok(on_epoch_tick(store.data().deadline())));
    store
}

/// The length a response head declares, if it declares one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Makes a function's next instance once its request's instance is done
/// with: when [`MakeNext::run`] is awaited after the store is dropped, or
/// in a task of its own if dropped first (the guest failed, or was stopped
/// when its client went away).
struct MakeNext(Option<(Weak<ReadySlot>, MakeInstance)>);

impl MakeNext {
    async fn run(mut self) {
        if let Some((slot, make)) = self.0.take() {
            make.fill(&slot).await;
        }
    }
}

impl Drop for MakeNext {
    fn drop(&mut self) {
        // The task owns no `MakeNext`: a runtime shutting down drops the
        // task unpolled, and that must not spawn another.
        if let Some((slot, make)) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { make.fill(&slot).await });
        }
    }
}

/// What makes a function's next instance ahead of its request.
struct MakeInstance {
    pre: ProxyPre<StoreState>,
    template: Arc<StoreTemplate>,
    limits: Limits,
    epoch: EpochHandle,
}

impl MakeInstance {
    /// Makes `slot`'s instance, if it has none and the host has room.
    async fn fill(self, slot: &Weak<ReadySlot>) {
        ReadySlot::fill(slot, async || self.run().await).await;
    }

    /// A fresh instance, with no request yet; `None` if instantiating it
    /// failed (a trap or a limit in its start code, a full pool): the
    /// request that would have used it instantiates its own instead, and
    /// meets the failure there.
    async fn run(self) -> Option<Reusable> {
        let deadline = Instant::now() + self.limits.timeout;
        let mut store = new_store(
            &self.pre,
            &self.template,
            self.limits,
            "",
            HeaderMap::new(),
            deadline,
        );
        // Start code is guest code: it keeps to the same deadline.
        let running = self.epoch.running();
        let made =
            tokio::time::timeout_at(deadline.into(), self.pre.instantiate_async(&mut store)).await;
        drop(running);
        let proxy = made.ok()?.ok()?;
        Some(Reusable {
            store,
            proxy,
            uses: 0,
        })
    }
}

/// Names what went wrong: the memory limit or the host's budget if growth
/// was refused, the timeout if the epoch callback stopped the guest, a full
/// pool, or a trap.
fn classify(
    error: wasmtime::Error,
    store: &Store<StoreState>,
    limits: &Limits,
    budget: &MemoryBudget,
) -> GuestFailure {
    if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        GuestFailure::Timeout(limits.timeout)
    } else if store.data().memory_refused() == Some(Refusal::Instance) {
        GuestFailure::MemoryLimit {
            limit: limits.memory,
            error,
        }
    } else if store.data().memory_refused() == Some(Refusal::Host) {
        GuestFailure::MemoryBudget {
            budget: budget.limit(),
            error,
        }
    } else if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        GuestFailure::Overloaded(error)
    } else {
        GuestFailure::Trap(error)
    }
}

/// The guest's run. It starts in the request's own task, which drives it
/// until the response head is ready: by then most guests have written their
/// body and returned, and no task is spawned for them. A guest still running
/// then goes on in a task of its own, so that it keeps to its deadline even
/// while nobody reads its body. Dropping it stops the guest.
enum GuestTask {
    Inline(Pin<Box<dyn Future<Output = Result<(), GuestFailure>> + Send>>),
    Detached(Detached),
    Ended(Option<Result<(), GuestFailure>>),
}

impl GuestTask {
    /// Runs the guest until it waits or ends; ready once it has ended.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let outcome = match self {
            Self::Inline(run) => ready!(run.poll_unpin(cx)),
            Self::Detached(Detached { task, .. }) => match ready!(task.poll_unpin(cx)) {
                Ok(outcome) => outcome,
                Err(join_error) => Err(GuestFailure::Trap(wasmtime::Error::msg(format!(
                    "the guest task failed: {join_error}"
                )))),
            },
            Self::Ended(_) => return Poll::Ready(()),
        };
        *self = Self::Ended(Some(outcome));
        Poll::Ready(())
    }

    /// Hands a guest that has not ended to a task of its own.
    fn detach(&mut self) {
        if let Self::Inline(_) = self
            && let Self::Inline(run) = std::mem::replace(self, Self::Ended(None))
        {
            *self = Self::Detached(Detached {
                task: tokio::spawn(run),
                stop_when_dropped: true,
            });
        }
    }
}

impl Future for GuestTask {
    type Output = Result<(), GuestFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        ready!(self.poll_run(cx));
        match &mut *self {
            Self::Ended(outcome) => Poll::Ready(outcome.take().unwrap_or(Ok(()))),
            Self::Inline(_) | Self::Detached(_) => unreachable!("the guest has ended"),
        }
    }
}

/// A guest's own task, stopped when dropped (the client went away) unless
/// let go of first.
struct Detached {
    task: tokio::task::JoinHandle<Result<(), GuestFailure>>,
    stop_when_dropped: bool,
}

impl Detached {
    /// Lets the guest run on to its end (or its deadline) unwatched.
    fn let_go(mut self) {
        self.stop_when_dropped = false;
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if self.stop_when_dropped {
            self.task.abort();
        }
    }
}

/// A response body streamed from the guest. It ends cleanly only if the
/// guest returned normally; if the guest trapped, the body ends with the
/// trap as its error.
pub struct GuestBody {
    body: HyperOutgoingBody,
    guest: Option<GuestTask>,
    /// What is left of the length the response head declared. HTTP/1
    /// drops a body once that much is sent, without waiting for its end.
    unsent: Option<u64>,
}

/// Why a guest's response body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The guest stream reported an error.
    #[error("the response body failed: {0}")]
    Stream(wasmtime_wasi_http::Error),
    /// The guest failed (trapped, hit a limit) while writing the body.
    #[error("while writing the response body: {0}")]
    Failed(GuestFailure),
}

impl Body for GuestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = ready!(Pin::new(&mut self.body).poll_frame(cx)) {
            if let (Ok(frame), Some(unsent)) = (&frame, &mut self.unsent)
                && let Some(data) = frame.data_ref()
            {
                *unsent = unsent.saturating_sub(data.len() as u64);
            }
            return Poll::Ready(Some(frame.map_err(BodyError::Stream)));
        }
        let Some(guest) = self.guest.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = ready!(guest.poll_unpin(cx));
        self.guest = None;
        Poll::Ready(outcome.err().map(|failure| Err(BodyError::Failed(failure))))
    }

    fn is_end_stream(&self) -> bool {
        self.guest.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for GuestBody {
    /// A body dropped before its end stops the guest (the client went
    /// away), unless all of its declared length was sent: then the guest
    /// may still be finishing, and runs on to its end, within its deadline.
    fn drop(&mut self) {
        if self.unsent == Some(0)
            && let Some(GuestTask::Detached(guest)) = self.guest.take()
        {
            guest.let_go();
        }
    }
}
