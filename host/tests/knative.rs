//! What Knative does to a revision's container, done to the real host:
//! `$PORT`, probes through queue-proxy, forwarded and trace headers, the
//! metrics-only listener, and a non-root run on a read-only root. (SIGTERM
//! with requests in flight is in `shutdown.rs`.)

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Host, TOKEN, example, h2c, http1, manifest, token_file};

/// The TCP ports `pid` listens on, from `/proc`: its socket descriptors
/// matched with the listening sockets of its network namespace.
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let sockets: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, state (0A: listening), inode
            let (local, state, inode) = (fields[1], fields[3], fields[9]);
            if state == "0A" && sockets.contains(inode) {
                let port = local.rsplit_once(':').unwrap().1;
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `host run <manifest>` with `PORT` set and no `--listen`, and stdin at
/// its end from the start, as Knative starts it.
fn run_with_port(manifest: &Path, data_dir: &Path, port: &str, args: &[&str]) -> Command {
    let mut command = Command::new(common::host_binary());
    command
        .arg("run")
        .arg(manifest)
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("PORT", port)
        .stdin(std::process::Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_listens_on_port_with_http1_and_h2c_and_on_no_port_of_knatives() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    let token = token_file(dir.path());
    let port = free_port();
    let args = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--admin-token-file",
        token.to_str().unwrap(),
    ];
    let command = run_with_port(
        &manifest,
        &dir.path().join("data"),
        &port.to_string(),
        &args,
    );
    let host = Host::launch(command, &dir.path().join("data")).unwrap();
    assert_eq!(host.addr, format!("0.0.0.0:{port}").parse().unwrap());

    let url = format!("http://127.0.0.1:{port}/hello");
    for client in [http1(), h2c()] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "Hello, world!\n");
    }

    // Its sockets: $PORT, the admin API and the metrics listener; none of
    // the ports queue-proxy or the mesh sidecar use.
    let metrics = host.metrics.expect("the metrics listener's address");
    let expected = BTreeSet::from([port, host.admin.port(), metrics.port()]);
    assert_eq!(listening_ports(host.pid()), expected);

    // The metrics listener serves /metrics without a token, and nothing
    // else; the admin API wants its token.
    let response = http1()
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("shoal_build_info"));
    for path in ["/v1/functions", "/v1/status", "/"] {
        let response = http1()
            .get(format!("http://{metrics}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = http1()
        .delete(format!("http://{metrics}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    let admin = format!("http://{}/v1/functions", host.admin);
    assert_eq!(http1().get(&admin).send().await.unwrap().status(), 401);
}

#[test]
fn a_port_of_knatives_or_istios_is_refused_with_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    let data = dir.path().join("data");
    // A host that takes the port serves on: give it 30 s to refuse.
    let refused = |mut command: Command| {
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("the host started instead of refusing the port");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = refused(run_with_port(&manifest, &data, "8012", &[]));
    assert!(
        stderr.contains("port 8012 is used by Knative's queue-proxy"),
        "{stderr}"
    );
    let stderr = refused(run_with_port(
        &manifest,
        &data,
        &free_port().to_string(),
        &["--metrics-listen", "127.0.0.1:15020"],
    ));
    assert!(
        stderr.contains("--metrics-listen 127.0.0.1:15020: port 15020 is used by Istio's sidecar"),
        "{stderr}"
    );
    let stderr = refused(run_with_port(
        &manifest,
        &data,
        &free_port().to_string(),
        &["--metrics-listen", "127.0.0.1:9091"],
    ));
    assert!(stderr.contains("Knative's queue-proxy"), "{stderr}");
}

/// A probe as queue-proxy sends it.
fn probe(url: String) -> reqwest::RequestBuilder {
    http1().get(url).header("K-Kubelet-Probe", "queue")
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_are_answered_by_the_host_503_until_every_component_compiled_never_by_a_function() {
    const COPIES: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let copies: Vec<PathBuf> = (0..COPIES)
        .map(|n| common::variant(dir.path(), &example("hello"), n))
        .collect();
    let routes: Vec<String> = (0..COPIES).map(|n| format!("/f{n}")).collect();
    let mut functions: Vec<(String, &Path, Vec<&str>)> = copies
        .iter()
        .zip(&routes)
        .enumerate()
        .map(|(n, (path, route))| (format!("f{n}"), path.as_path(), vec![route.as_str()]))
        .collect();
    let echo = example("echo");
    functions.push(("echo".to_owned(), &echo, vec!["/echo/..."]));
    let functions: Vec<(&str, &Path, &[&str], &[&str])> = functions
        .iter()
        .map(|(name, path, routes)| (name.as_str(), *path, routes.as_slice(), &[][..]))
        .collect();
    let manifest = manifest(dir.path(), &functions);
    // A fresh data dir: every copy compiles while the host already listens.
    let host = Host::start_with(&manifest, &dir.path().join("data"), &[], &[]).unwrap();

    let first = probe(host.url("/")).send().await.unwrap();
    assert_eq!(
        first.status(),
        503,
        "the first probe came after every compile"
    );
    assert_eq!(first.headers()["retry-after"], "1");
    let started = Instant::now();
    loop {
        let response = probe(host.url("/")).send().await.unwrap();
        if response.status() == 200 {
            assert_eq!(response.text().await.unwrap(), "ready\n");
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(host.status().await["compiled"], true);

    // A probe at a function's path, in each of its forms, is the host's:
    // echo never sees it and does not wake up.
    let url = host.url("/echo/probe");
    let probes = [
        probe(url.clone()),
        http1().get(&url).header("User-Agent", "kube-probe/1.31"),
        http1().get(&url).header("K-Network-Probe", "queue"),
        h2c().get(&url).header("K-Kubelet-Probe", "queue"),
    ];
    for request in probes {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(!response.headers().contains_key("echo-path"));
        assert_eq!(response.text().await.unwrap(), "ready\n");
    }
    let echo_view = host.function("echo").await;
    assert_eq!(echo_view["cold_starts"], 0, "{echo_view}");
    assert_eq!(echo_view["state"], "compiled", "{echo_view}");

    // What the activator proxies is an ordinary request.
    let response = http1()
        .get(host.url("/echo/through-the-activator"))
        .header("K-Proxy-Request", "activator")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["echo-header-k-proxy-request"],
        "activator"
    );

    // Under load and after it, probes still answer, and none of them is
    // counted as a request.
    let load = futures::future::join_all((0..200).map(|n| {
        let url = host.url(&format!("/f{}", n % COPIES));
        async move { http1().get(url).send().await.unwrap().status().as_u16() }
    }));
    let probing = async {
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(
                probe(host.url("/f0"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        statuses
    };
    let (load, probed) = tokio::join!(load, probing);
    assert!(load.iter().all(|&s| s == 200), "{load:?}");
    assert!(probed.iter().all(|&s| s == 200), "{probed:?}");
    assert_eq!(probe(host.url("/f0")).send().await.unwrap().status(), 200);
    let requests: f64 = host
        .metrics()
        .await
        .iter()
        .filter(|(key, _)| key.starts_with("shoal_requests_total{"))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(
        requests, 201.0,
        "200 requests and the activator's, no probe"
    );
    let unrouted: f64 = host
        .metrics()
        .await
        .iter()
        .filter(|(key, _)| key.starts_with("shoal_unrouted_requests_total"))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(unrouted, 0.0, "the probes at / were not requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_forwarded_and_trace_headers_reach_the_function_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &[("echo", &example("echo"), &["/..."], &[])]);
    let host = Host::start_with(&manifest, &dir.path().join("data"), &[], &[]).unwrap();
    let headers = [
        (
            "forwarded",
            "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\"",
        ),
        (
            "x-forwarded-for",
            "203.0.113.195,  70.41.3.18, 150.172.238.178",
        ),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example.com"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        (
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        ),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
        ("x-request-id", "d2a9c1f0-knative-7"),
        (
            "x-user-header",
            "Mixed  Case; with \"quotes\", commas,and\ttabs ~!%2F",
        ),
    ];
    // The name a mesh would use, resolved to the host: `Host` in HTTP/1.1,
    // `:authority` in HTTP/2.
    let authority = format!("shop.example.com:{}", host.addr.port());
    let builder = || reqwest::Client::builder().resolve("shop.example.com", host.addr);
    let clients = [
        (builder().http1_only().build().unwrap(), "HTTP/1.1"),
        (builder().http2_prior_knowledge().build().unwrap(), "h2c"),
    ];
    for (client, version) in clients {
        let mut request = client.get(format!("http://{authority}/orders/7?x=1"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{version}");
        let echoed = response.headers();
        assert_eq!(echoed["echo-authority"], authority.as_str(), "{version}");
        assert_eq!(echoed["echo-path"], "/orders/7", "{version}");
        assert_eq!(echoed["echo-query"], "x=1", "{version}");
        for (name, value) in headers {
            let echoed = &echoed[format!("echo-header-{name}").as_str()];
            assert_eq!(echoed.as_bytes(), value.as_bytes(), "{version}: {name}");
        }
    }
}

/// Runs `script` as root in a mount namespace of its own, in this process
/// (no fork: the host it starts keeps the PID).
fn in_mount_namespace(script: &str) -> Command {
    let mut command = Command::new("unshare");
    command.args(["--mount", "sh", "-c", script]);
    command
}

/// A folder another user can read, with a manifest of hello in it and a
/// `tmp` folder anyone may write (what Kubernetes mounts on `/tmp`).
fn for_another_user() -> (tempfile::TempDir, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = manifest(
        dir.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).unwrap();
    (dir, manifest, scratch)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_runs_as_any_uid_from_slash_on_a_read_only_root_writing_only_its_data_dir() {
    use std::os::unix::fs::MetadataExt as _;
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root for unshare and setpriv");
        return;
    }
    let (_dir, manifest, scratch) = for_another_user();
    let port = free_port();
    let script = format!(
        "set -e; mount --make-rprivate /; mount --bind {scratch} {scratch}; \
         mount -o remount,bind,ro /; cd /; \
         exec setpriv --reuid 2020 --regid 2020 --clear-groups \
         env -i HOME=/nonexistent TMPDIR={scratch} PORT={port} \
         {host} run {manifest} --admin-listen 127.0.0.1:0",
        scratch = scratch.display(),
        host = common::host_binary().display(),
        manifest = manifest.display(),
    );
    let mut host = Host::launch(in_mount_namespace(&script), &scratch).unwrap();
    assert_eq!(
        http1()
            .get(format!("http://127.0.0.1:{port}/hello"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Hello, world!\n"
    );
    // Everything it wrote is in its data dir, under the temporary folder,
    // owned by uid 2020.
    let data_dir = scratch.join("shoal-2020");
    let written: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(written, std::slice::from_ref(&data_dir));
    let metadata = std::fs::metadata(&data_dir).unwrap();
    assert_eq!((metadata.uid(), metadata.mode() & 0o777), (2020, 0o700));
    assert!(
        host.log().contains("no writable home folder"),
        "{}",
        host.log()
    );
    // The process runs as uid 2020 with `/` as its working directory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|uid| uid == "2020"),
        "{uid_line}"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", host.pid())).unwrap(),
        Path::new("/")
    );

    host.signal("TERM");
    assert!(host.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn a_data_dir_someone_else_made_in_the_temporary_folder_is_refused() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root to run as another user");
        return;
    }
    let (_dir, manifest, scratch) = for_another_user();
    // Another user (root here) got there first.
    std::fs::create_dir(scratch.join("shoal-2020")).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid", "2020", "--regid", "2020", "--clear-groups"])
        .arg(common::host_binary())
        .arg("run")
        .arg(&manifest)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("HOME", "/nonexistent")
        .env("TMPDIR", &scratch)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("SHOAL_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a folder of this user's (uid 2020); set --data-dir"),
        "{stderr}"
    );
}
