//! What the integration tests share: building the guest programs, starting
//! the real `host` binary on `127.0.0.1:0`, and reading its output.
#![allow(unreachable_pub)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long a host may take to compile its functions and start listening.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The `host` binary under test: this build's, unless `SHOAL_TEST_HOST`
/// names another (a packaged binary, or an older build to show that a test
/// fails without a fix).
pub fn host_binary() -> PathBuf {
    std::env::var_os("SHOAL_TEST_HOST")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_host")), PathBuf::from)
}

/// The repository's root folder.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A test guest from `host/tests/guests`, built on first use.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| build_wasm_workspace("host/tests/guests", "guests"));
    artifact(dir, name)
}

/// An example function from `examples/`, built on first use.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| build_wasm_workspace("examples", "examples"));
    artifact(dir, name)
}

fn artifact(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "no guest artifact {}", path.display());
    path
}

/// Builds a workspace of guests for wasm32-wasip2 into `target/<target>`;
/// returns the folder holding the `.wasm` files. Cargo's own lock makes
/// concurrent test processes wait for one another.
fn build_wasm_workspace(workspace: &str, target: &str) -> PathBuf {
    let root = repo();
    let target_dir = root.join("target").join(target);
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(root.join(workspace).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .expect("cannot run cargo");
    assert!(
        status.success(),
        "building the guests in {workspace} failed"
    );
    target_dir.join("wasm32-wasip2").join("release")
}

/// A running `host` process, killed when dropped.
pub struct Host {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The metrics-only listener, with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    stderr: Arc<Mutex<String>>,
    /// The log's pipe, held open and never read, for a stalled log.
    _stalled_log: Option<std::process::ChildStderr>,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// Whether a host's log is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Log {
    Read,
    Stalled,
}

impl Host {
    /// Starts `host run <target>` with a fresh data folder.
    pub fn start(target: &Path) -> Host {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().to_owned();
        let mut host =
            Host::start_with(target, &data_dir, &[], &[]).unwrap_or_else(|e| panic!("{e}"));
        host._temp = Some(temp);
        host
    }

    /// Starts `host run <target> <args>` with `data_dir` and extra
    /// environment; `Err` holds the output of a host that exited instead.
    pub fn start_with(
        target: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Host, String> {
        Host::spawn(
            Command::new(host_binary()),
            target,
            data_dir,
            args,
            env,
            Log::Read,
        )
    }

    /// Like [`Host::start_with`], but nobody reads the host's log: its
    /// stderr pipe fills and stays full.
    pub fn start_with_stalled_log(target: &Path, data_dir: &Path, args: &[&str]) -> Host {
        Host::spawn(
            Command::new(host_binary()),
            target,
            data_dir,
            args,
            &[],
            Log::Stalled,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Host::start_with`], with the process's virtual address space
    /// limited to `kib` KiB (`ulimit -v`).
    pub fn start_with_address_space(
        target: &Path,
        data_dir: &Path,
        kib: u64,
    ) -> Result<Host, String> {
        Host::start_with_shell_limits(&format!("ulimit -v {kib}"), target, data_dir, &[])
    }

    /// Like [`Host::start_with`], in a shell that first runs `limits` (such
    /// as `ulimit -n 256`).
    pub fn start_with_shell_limits(
        limits: &str,
        target: &Path,
        data_dir: &Path,
        args: &[&str],
    ) -> Result<Host, String> {
        let mut shell = Command::new("sh");
        // `exec` keeps the PID: the child is the host itself.
        shell
            .arg("-c")
            .arg(format!("{limits} && exec \"$0\" \"$@\""))
            .arg(host_binary());
        Host::spawn(shell, target, data_dir, args, &[], Log::Read)
    }

    fn spawn(
        mut command: Command,
        target: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: Log,
    ) -> Result<Host, String> {
        run_on_free_ports(&mut command, target, data_dir)
            .args(args)
            .envs(env.iter().copied());
        Host::launch_with(command, data_dir, log)
    }

    /// Starts a host from a command that holds all its arguments (`run
    /// TARGET ...`), its data folder being `data_dir`; waits until it
    /// listens. `Err` holds the output of a host that exited instead.
    pub fn launch(command: Command, data_dir: &Path) -> Result<Host, String> {
        Host::launch_with(command, data_dir, Log::Read)
    }

    fn launch_with(mut command: Command, data_dir: &Path, log: Log) -> Result<Host, String> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the host binary");

        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let (pipe, stalled_pipe) = match log {
            Log::Read => (Some(pipe), None),
            Log::Stalled => (None, Some(pipe)),
        };
        std::thread::spawn(move || {
            let Some(mut pipe) = pipe else { return };
            let mut buf = [0; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let (mut admin, mut metrics) = (None, None);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("admin on http://") {
                    admin = Some(addr.parse::<SocketAddr>().unwrap());
                }
                if let Some(addr) = line.strip_prefix("metrics on http://") {
                    let addr = addr.strip_suffix("/metrics").expect("the metrics URL");
                    metrics = Some(addr.parse::<SocketAddr>().unwrap());
                }
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let admin = admin.expect("the admin line comes first");
                    let _ = tx.send((addr.parse::<SocketAddr>().unwrap(), admin, metrics));
                }
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((addr, admin, metrics)) = rx.recv_timeout(Duration::from_millis(50)) {
                // stdout and stderr are separate pipes: wait for the log line
                // written just before `listening on`, so that the start-up
                // log is complete when `log()` is first read.
                let serving = |log: &str| log.contains(" serving ") || log.contains("\"serving\"");
                while stalled_pipe.is_none() && !serving(&stderr.lock().unwrap()) {
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!("no `serving` log line");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Ok(Host {
                    child,
                    addr,
                    admin,
                    metrics,
                    stderr,
                    _stalled_log: stalled_pipe,
                    data_dir: data_dir.to_owned(),
                    _temp: None,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(100));
                let output = stderr.lock().unwrap().clone();
                return Err(format!("host exited with {status}:\n{output}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the host did not start listening in time");
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path` over HTTP/1.1: the status and the whole body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = http1().get(self.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// A client that sends `GET path`, takes the first bytes of a 200
    /// answer, then reads nothing more and keeps its socket open.
    pub fn stop_reading_after_the_head(&self, path: &str) -> std::net::TcpStream {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut head = [0u8; 64];
        stream.read_exact(&mut head).unwrap();
        assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
        stream
    }

    /// The admin API's view of every function (`GET /v1/functions`; with
    /// the tests' token, which a host without one ignores).
    pub async fn functions(&self) -> Vec<serde_json::Value> {
        let url = format!("http://{}/v1/functions", self.admin);
        let response = http1().get(url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The admin API's status (`GET /v1/status`).
    pub async fn status(&self) -> serde_json::Value {
        let url = format!("http://{}/v1/status", self.admin);
        let response = http1().get(url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Waits (60 s at most) until the admin API says every component is
    /// compiled.
    pub async fn wait_compiled(&self) {
        let started = Instant::now();
        while self.status().await["compiled"] != true {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never compiled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The host's metrics (`GET /metrics`), keyed by `name{labels}`.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let url = format!("http://{}/metrics", self.admin);
        let response = http1().get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        samples(&response.text().await.unwrap())
    }

    /// The admin API's view of function `name`.
    pub async fn function(&self, name: &str) -> serde_json::Value {
        let functions = self.functions().await;
        functions
            .into_iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no function {name} in the admin API"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the host wrote to stderr (its log) so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits for a log line matching `matches`; `None` after `timeout`.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(line) = self.log().lines().find(|line| matches(line)) {
                return Some(line.to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a signal to this host (by its PID).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the host to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the host did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// CPU time the host has used so far (user and system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // Linux reports CPU time in clock ticks of 1/100 s.
        Duration::from_millis(ticks * 10)
    }

    /// Whether the host process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        status_kib(self.pid(), field).unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`), if the
/// process is there.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
}

/// The samples of a Prometheus text exposition, keyed by `name{labels}`
/// with the labels sorted as the encoder writes them.
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Adds `run <target>` on free loopback ports, with `data_dir`, to a
/// command that starts the host.
pub fn run_on_free_ports<'a>(
    host: &'a mut Command,
    target: &Path,
    data_dir: &Path,
) -> &'a mut Command {
    host.arg("run")
        .arg(target)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
}

/// Runs `host run <target> --data-dir <data>` on free ports until it exits
/// by itself (within [`START_TIMEOUT`]); returns its exit status and stderr.
pub fn run_to_exit(target: &Path, data_dir: &Path) -> (ExitStatus, String) {
    run_to_exit_with(target, data_dir, &[])
}

/// [`run_to_exit`] with more arguments.
pub fn run_to_exit_with(target: &Path, data_dir: &Path, args: &[&str]) -> (ExitStatus, String) {
    let mut host = Command::new(host_binary());
    let mut child = run_on_free_ports(&mut host, target, data_dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the host binary");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the host did not exit by itself");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

/// Polls the admin API until `field` of function `name` is `value`.
pub async fn wait_for(
    host: &Host,
    name: &str,
    field: &str,
    value: impl Into<serde_json::Value>,
    timeout: Duration,
) -> serde_json::Value {
    let value = value.into();
    let deadline = Instant::now() + timeout;
    loop {
        let function = host.function(name).await;
        if function[field] == value {
            return function;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {field} never became {value}: {function}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A function for [`manifest`]: name, component, routes, and more lines of
/// TOML for its table (`env = { A = "1" }`, `timeout = "1s"`...).
pub type Decl<'a> = (&'a str, &'a Path, &'a [&'a str], &'a [&'a str]);

/// A manifest in `dir` serving `functions`.
pub fn manifest(dir: &Path, functions: &[Decl<'_>]) -> PathBuf {
    let mut text = String::new();
    for (name, component, routes, settings) in functions {
        text.push_str(&format!(
            "[[function]]\nname = {name:?}\ncomponent = {:?}\nroutes = {routes:?}\n",
            component.display().to_string()
        ));
        for line in *settings {
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
    }
    write(dir, "shoal.toml", text)
}

/// `component` with a custom section appended, written as `variant-N.wasm`
/// in `dir`: the same program under another digest, so that it gets a
/// compile job and an artifact of its own.
pub fn variant(dir: &Path, component: &Path, n: usize) -> PathBuf {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"shoal-test-variant";
    let payload = n.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128 && name.len() < 128, "one-byte LEB128 sizes");
    bytes.extend([0, size as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(payload);
    write(dir, &format!("variant-{n}.wasm"), bytes)
}

/// A command's standard output, after checking it succeeded (the failure
/// shows its status, stdout and stderr).
pub fn succeeded(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// An HTTP/1.1 client.
pub fn http1() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

/// An h2c client (HTTP/2 with prior knowledge).
pub fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// The `bff` example's manifest settings: its two services' URLs, and the
/// outbound allowlist that lets it call them.
pub fn bff_settings(users: &Backend, orders: &Backend) -> [String; 2] {
    let env = format!(
        "env = {{ USERS_URL = {:?}, ORDERS_URL = {:?} }}",
        users.url("/users"),
        orders.url("/orders")
    );
    let allowed = format!(
        "allowed_outbound_hosts = [\"http://{}\", \"http://{}\"]",
        users.addr, orders.addr
    );
    [env, allowed]
}

/// A local HTTP/1.1 server standing in for a service a function calls: it
/// records what it receives and answers with `answer`, after `delay`.
pub struct Backend {
    pub addr: SocketAddr,
    /// The headers of every request received, in order.
    pub requests: Arc<Mutex<Vec<(String, http::HeaderMap)>>>,
    /// Their bodies, in the same order.
    pub bodies: Arc<Mutex<Vec<bytes::Bytes>>>,
    /// Connections accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend {
    /// Serves on `127.0.0.1:0` until the test ends.
    pub async fn start(answer: &'static str, delay: Duration) -> Backend {
        Backend::start_on("127.0.0.1:0", answer, delay).await
    }

    /// Serves on `addr` (`[::1]:0`, say) until the test ends.
    pub async fn start_on(addr: &str, answer: &'static str, delay: Duration) -> Backend {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<(String, http::HeaderMap)>>> = Arc::default();
        let bodies: Arc<Mutex<Vec<bytes::Bytes>>> = Arc::default();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen, read, accepted) = (requests.clone(), bodies.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (seen, read) = (seen.clone(), read.clone());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (seen, read) = (seen.clone(), read.clone());
                    async move {
                        use http_body_util::BodyExt as _;
                        let target = request.uri().to_string();
                        let headers = request.headers().clone();
                        let body = request.into_body().collect().await;
                        let body = body.map(|b| b.to_bytes()).unwrap_or_default();
                        {
                            // Recorded together, so that both lists stay in step.
                            let mut seen = seen.lock().unwrap();
                            read.lock().unwrap().push(body);
                            seen.push((target, headers));
                        }
                        tokio::time::sleep(delay).await;
                        let response = http::Response::builder()
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from(answer)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            requests,
            bodies,
            connections,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// The admin token the deploy tests use.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Writes [`TOKEN`] to a file in `dir`; returns its path.
pub fn token_file(dir: &Path) -> PathBuf {
    write(dir, "admin-token", TOKEN)
}

/// Calls to a host's admin API, with a token or without.
pub struct AdminApi<'a> {
    pub host: &'a Host,
    pub token: Option<&'a str>,
}

impl AdminApi<'_> {
    /// `method path` with `body`; the status and the JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let url = format!("http://{}{path}", self.host.admin);
        let mut request = http1().request(method, url).body(body);
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, json)
    }

    /// Uploads `bytes` as a component.
    pub async fn upload(&self, bytes: Vec<u8>) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, "/v1/components", bytes)
            .await
    }

    /// Deploys `definition` as function `name`'s next revision.
    pub async fn deploy(&self, name: &str, definition: &str) -> (u16, serde_json::Value) {
        let path = format!("/v1/functions/{name}");
        self.call(reqwest::Method::PUT, &path, definition.to_owned())
            .await
    }

    /// Uploads `component` and deploys it at `routes`, which must succeed;
    /// returns the new revision's name.
    pub async fn deploy_component(&self, name: &str, component: &Path, routes: &[&str]) -> String {
        let (status, uploaded) = self.upload(std::fs::read(component).unwrap()).await;
        assert!(status == 200 || status == 201, "{status}: {uploaded}");
        let digest = uploaded["component"].as_str().unwrap();
        let definition = format!("component = {digest:?}\nroutes = {routes:?}\n");
        let (status, deployed) = self.deploy(name, &definition).await;
        assert_eq!(status, 201, "{deployed}");
        deployed["revision"].as_str().unwrap().to_owned()
    }

    /// Sets function `name`'s traffic.
    pub async fn traffic(
        &self,
        name: &str,
        traffic: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let path = format!("/v1/functions/{name}/traffic");
        self.call(reqwest::Method::PUT, &path, traffic.to_string())
            .await
    }

    /// Function `name`'s revisions and traffic (`GET .../revisions`).
    pub async fn revisions(&self, name: &str) -> (u16, serde_json::Value) {
        let path = format!("/v1/functions/{name}/revisions");
        self.call(reqwest::Method::GET, &path, Vec::new()).await
    }
}

/// A host serving the scribble guest at `/scribble` with `args`, one
/// instance at a time (so that each lands in the same pool slot) and none
/// made ahead.
pub fn scribble_host(dir: &Path, args: &[&str]) -> Host {
    let manifest = manifest(
        dir,
        &[("scribble", &guest("scribble"), &["/scribble"], &[])],
    );
    let mut all = vec!["--max-instances", "1", "--ready-instances", "0"];
    all.extend(args);
    Host::start_with(&manifest, &dir.join("data"), &all, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// The scribble guest's answer to `GET /scribble<query>`: how many bytes
/// of its memory it found written.
pub async fn scribble(host: &Host, query: &str) -> String {
    let response = http1()
        .get(host.url(&format!("/scribble{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}
