//! One request through the runtime, in process: no socket, no HTTP parser,
//! no load generator. What `benches/run` cannot separate from the kernel
//! and the client (see benches/README.md, "Where a request's CPU time
//! goes"), this measures alone, with criterion's statistics.
//!
//! Each iteration sends the Rust hello a `GET /hello`, reads the whole
//! answer, and waits until the instance is done with (its store dropped,
//! its slot back in the pool, or the instance back among the idle ones):
//! the whole CPU cost of a request on one thread.
//!
//! - `shoal fresh`: `Function::handle` with a fresh instance per request,
//!   none made ahead (`ready_instances = 0`), so that the store's creation,
//!   the instantiation and the drop all fall in the iteration.
//! - `shoal reuse`: the same function with `max_instance_reuse`.
//! - `wasmtime-wasi-http fresh`: the reference, measured in the same run:
//!   what `wasmtime serve` does per request, with nothing of the runtime's:
//!   a store with an empty WASI context, the request and response
//!   resources, `ProxyPre::instantiate_async`, `handle`, the body read, the
//!   store dropped. Twice: on an engine with wasmtime's defaults and its
//!   default pooling allocator, and on one set as the runtime's (how
//!   memory is reset between instances, no WASIp3 concurrency). The first
//!   against the second is what the runtime's engine settings save;
//!   `shoal fresh` against the second, what the runtime adds (its limits,
//!   log capture, epoch deadlines, outbound policy, instance bookkeeping).
//! - `wasmtime-wasi-http reuse`: the reference's requests through one
//!   instance made before the timing, as `wasmtime serve
//!   --max-instance-reuse-count` runs them, on the runtime's engine
//!   settings: what `shoal reuse` adds to bare wasmtime-wasi-http.
//!
//! `cargo bench -p shoal-benches --bench request` (it builds the hello if
//! need be). `scripts/test` runs it in criterion's test mode, each
//! benchmark once, so that it keeps working.

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use shoal_runtime::{
    ComponentSource, Function, FunctionSpec, Limits, OutboundPolicy, OutputLimits, Runtime,
    RuntimeConfig,
};
use tokio::sync::oneshot;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// What the hello answers.
const HELLO: &[u8] = b"Hello, world!\n";

/// The Rust hello, built as the tests build it (a no-op once built).
fn hello_component() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = repo.join("target/examples");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(repo.join("examples/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "cannot build the examples");
    target.join("wasm32-wasip2/release/hello.wasm")
}

fn request() -> http::Request<Empty<Bytes>> {
    http::Request::get("http://localhost/hello")
        .body(Empty::new())
        .unwrap()
}

/// The Rust hello as the host would serve it, reusing each instance up to
/// `reuse` times.
fn shoal_function(runtime: &Runtime, hello: &Path, reuse: u32) -> Function {
    let source = ComponentSource::read(hello).unwrap();
    let artifact = runtime.compile(&source).unwrap();
    runtime
        .warm(
            &artifact,
            FunctionSpec {
                name: "hello".to_owned(),
                env: Vec::new(),
                max_instance_reuse: NonZeroU32::new(reuse).unwrap(),
                limits: Limits::default(),
                outbound: OutboundPolicy::new(Vec::new()),
                output: Arc::new(OutputLimits::default()),
            },
        )
        .unwrap()
}

/// One request through `function`, until its instance is done with.
async fn shoal_request(function: &Function) {
    let (held, done) = oneshot::channel::<()>();
    let response = function.handle(request(), "bench", held).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, HELLO);
    // The instance lets go of `held` once dropped or back among the idle.
    let _ = done.await;
}

/// The reference's store state: what `wasmtime serve` gives a request.
struct Reference {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutbound,
}

/// The hello makes no outbound call; `wasmtime serve` would send one.
struct NoOutbound;

/// What sending an outbound request returns.
type Sent = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        _: http::Request<WasiBody>,
        _: Option<RequestOptions>,
        _: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

impl WasiView for Reference {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Reference {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// How the reference's pool resets an instance's memory.
#[derive(Clone, Copy)]
enum Pool {
    /// wasmtime's defaults: dirty pages unmapped (`madvise`).
    Default,
    /// As the runtime's engine is set (`runtime/src/engine.rs`): dirty
    /// pages found with `PAGEMAP_SCAN` and restored in place, 4 MiB of each
    /// memory and 64 KiB of each table kept resident, no support for the
    /// component model's concurrency (WASIp3), and epoch interruption,
    /// which the runtime's code is compiled with.
    Shoal,
}

/// The hello linked on an engine with a pooling allocator set as `pool`.
fn reference_pre(hello: &Path, pool: Pool) -> ProxyPre<Reference> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    let mut pooling = PoolingAllocationConfig::default();
    if let Pool::Shoal = pool {
        pooling
            .pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(4 << 20)
            .table_keep_resident(64 << 10);
        config.concurrency_support(false);
        config.epoch_interruption(true);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    let engine = Engine::new(&config).unwrap();
    let component = Component::from_file(&engine, hello).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    ProxyPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

/// A store for one instance of `pre`, as `wasmtime serve` makes it.
fn reference_store(pre: &ProxyPre<Reference>) -> Store<Reference> {
    let mut store = Store::new(
        pre.engine(),
        Reference {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutbound,
        },
    );
    // No epoch ever passes it (the engine's epoch stays at 0).
    store.set_epoch_deadline(u64::MAX);
    store
}

/// One request through a fresh instance of `pre`, as `wasmtime serve`
/// runs it.
async fn reference_request(pre: &ProxyPre<Reference>) {
    let (mut store, proxy) = reference_instance(pre).await;
    reference_call(&mut store, &proxy).await;
    drop(store);
}

/// A store and an instance of `pre` for the reference to reuse.
async fn reference_instance(pre: &ProxyPre<Reference>) -> (Store<Reference>, Proxy) {
    let mut store = reference_store(pre);
    let proxy = pre.instantiate_async(&mut store).await.unwrap();
    (store, proxy)
}

/// One request through `proxy`, an instance in `store`: the request and
/// response resources, `handle`, the whole body.
async fn reference_call(store: &mut Store<Reference>, proxy: &Proxy) {
    let (sender, receiver) = oneshot::channel();
    let mut http = store.data_mut().http();
    let incoming = http
        .new_incoming_request(
            Scheme::Http,
            request().map(|body| body.map_err(|never: Infallible| -> Error { match never {} })),
        )
        .unwrap();
    let outparam = http.new_response_outparam(sender).unwrap();
    proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, incoming, outparam)
        .await
        .unwrap();
    let response = receiver.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, HELLO);
}

/// Times `iterations` requests made by `one`, one after the other, on a
/// current-thread runtime.
fn timed<F: Future<Output = ()>>(
    tokio: &tokio::runtime::Runtime,
    iterations: u64,
    mut one: impl FnMut() -> F,
) -> Duration {
    tokio.block_on(async {
        let start = Instant::now();
        for _ in 0..iterations {
            one().await;
        }
        start.elapsed()
    })
}

fn requests(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        ready_instances: 0,
        ..RuntimeConfig::new(cache.path())
    };
    let runtime = Runtime::new(&config).unwrap();
    let hello = hello_component();
    let fresh = shoal_function(&runtime, &hello, 1);
    let reuse = shoal_function(&runtime, &hello, u32::MAX);
    let plain = reference_pre(&hello, Pool::Default);
    let tuned = reference_pre(&hello, Pool::Shoal);

    let mut group = c.benchmark_group("hello request");
    group.bench_function("shoal fresh", |b| {
        b.iter_custom(|n| timed(&tokio, n, || shoal_request(&fresh)))
    });
    group.bench_function("shoal reuse", |b| {
        b.iter_custom(|n| timed(&tokio, n, || shoal_request(&reuse)))
    });
    group.bench_function("wasmtime-wasi-http fresh, default pool", |b| {
        b.iter_custom(|n| timed(&tokio, n, || reference_request(&plain)))
    });
    group.bench_function("wasmtime-wasi-http fresh, shoal's engine", |b| {
        b.iter_custom(|n| timed(&tokio, n, || reference_request(&tuned)))
    });
    group.bench_function("wasmtime-wasi-http reuse, shoal's engine", |b| {
        b.iter_custom(|n| {
            tokio.block_on(async {
                let (mut store, proxy) = reference_instance(&tuned).await;
                let start = Instant::now();
                for _ in 0..n {
                    reference_call(&mut store, &proxy).await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, requests);
criterion_main!(benches);
