//! `host run --build`: each function's build command runs in its folder
//! before serving; a failing one stops the host with its output; with
//! `--watch`, a change to a function's sources rebuilds that function only,
//! and a failed rebuild leaves it serving as it was.
//!
//! The builds here are shell commands that copy prebuilt components into
//! place, so that the mechanism is tested without a toolchain's minutes;
//! `host new` tests real toolchains.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Host, example, guest, run_to_exit_with, write};

/// A project folder `dir/name` with `src/v.wasm` (a copy of `component`);
/// its build copies it to `out/name.wasm`, unless `src/broken` exists.
fn project(dir: &Path, name: &str, component: &Path) {
    let src = dir.join(name).join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(component, src.join("v.wasm")).unwrap();
}

/// A manifest serving projects `a` and `b` from their build outputs.
fn manifest(dir: &Path) -> std::path::PathBuf {
    let mut text = String::new();
    for name in ["a", "b"] {
        text.push_str(&format!(
            r#"[[function]]
name = "{name}"
component = "{name}/out/{name}.wasm"
routes = ["/{name}"]
build = {{ command = "echo building {name}; test ! -e src/broken || {{ echo 'error: src/broken is there' >&2; exit 7; }}; mkdir -p out && cp src/v.wasm out/{name}.wasm.tmp && mv out/{name}.wasm.tmp out/{name}.wasm", workdir = "{name}", watch = ["src/*.wasm", "src/broken"] }}

"#
        ));
    }
    write(dir, "shoal.toml", text)
}

#[tokio::test(flavor = "multi_thread")]
async fn build_runs_each_command_in_its_folder_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "a", &example("hello"));
    project(dir.path(), "b", &guest("status"));
    let manifest = manifest(dir.path());

    // Without --build, nothing is built: the components are missing.
    let (status, output) = run_to_exit_with(&manifest, dir.path(), &[]);
    assert!(!status.success());
    assert!(output.contains("a/out/a.wasm"), "{output}");

    let host = Host::start_with(&manifest, dir.path(), &["--build"], &[]).unwrap();
    assert_eq!(host.get("/a").await, (200, "Hello, world!\n".to_owned()));
    assert_eq!(host.get("/b").await.0, 200);
    assert!(dir.path().join("b/out/b.wasm").exists());
    let log = host.log();
    let (a, b) = (
        log.find("building function=a").unwrap(),
        log.find("building function=b").unwrap(),
    );
    assert!(a < b, "in manifest order:\n{log}");
}

#[test]
fn a_failing_build_stops_the_host_with_the_commands_output() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "a", &example("hello"));
    project(dir.path(), "b", &guest("status"));
    write(&dir.path().join("b/src"), "broken", "");
    let manifest = manifest(dir.path());
    let started = Instant::now();
    let (status, output) = run_to_exit_with(&manifest, dir.path(), &["--build"]);
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("building function `b` failed (exit status: 7): echo building b;"),
        "{output}"
    );
    assert!(
        output.contains("building b\nerror: src/broken is there"),
        "{output}"
    );
    assert!(!output.contains("listening on"), "{output}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_watch_a_changed_source_rebuilds_and_reloads_that_function_only() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "a", &example("hello"));
    project(dir.path(), "b", &guest("status"));
    let manifest = manifest(dir.path());
    let host = Host::start_with(&manifest, dir.path(), &["--build", "--watch"], &[]).unwrap();
    assert_eq!(host.get("/a").await.1, "Hello, world!\n");
    assert_eq!(host.get("/b").await.0, 200);
    let b_cold_starts = host.function("b").await["cold_starts"].clone();

    // a's source becomes echo: a is rebuilt and reloaded, b stays warm.
    std::fs::copy(example("echo"), dir.path().join("a/src/v.wasm")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answer = String::new();
    while Instant::now() < deadline {
        let response = common::http1()
            .post(host.url("/a"))
            .body("echoed")
            .send()
            .await
            .unwrap();
        answer = response.text().await.unwrap();
        if answer == "echoed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, "echoed", "{}", host.log());
    assert!(
        host.log()
            .contains("sources changed: rebuilding function=a")
    );
    assert!(
        !host.log().contains("rebuilding function=b"),
        "{}",
        host.log()
    );
    // The reload is logged once applied: its line may trail the answer.
    assert!(
        host.wait_for_log("changed a", Duration::from_secs(10)),
        "{}",
        host.log()
    );
    assert_eq!(host.function("b").await["cold_starts"], b_cold_starts);

    // A failing rebuild is logged with its output; a keeps serving.
    write(&dir.path().join("a/src"), "broken", "");
    assert!(
        host.wait_for_log("rebuild failed", Duration::from_secs(60)),
        "{}",
        host.log()
    );
    let log = host.log();
    assert!(
        log.contains("failed (exit status: 7)") && log.contains("\nerror: src/broken is there"),
        "{log}"
    );
    let still = common::http1()
        .post(host.url("/a"))
        .body("still")
        .send()
        .await
        .unwrap();
    assert_eq!(still.text().await.unwrap(), "still");
}

#[test]
fn a_host_stopped_while_building_stops_the_build_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(
        dir.path(),
        "shoal.toml",
        r#"[[function]]
name = "slow"
component = "slow.wasm"
routes = ["/slow"]
build = { command = "sleep 120 & echo $! > sleep.pid; wait" }
"#,
    );
    let mut command = std::process::Command::new(common::host_binary());
    common::run_on_free_ports(&mut command, &manifest, dir.path()).arg("--build");
    let mut host = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("sleep.pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&pid_file).map_or(true, |p| p.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sleep_pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = host.wait().unwrap();
    assert_eq!(exit.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(host.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("stopped (SIGTERM) while building"),
        "{stderr}"
    );
    // The build's own child went with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = || Path::new(&format!("/proc/{sleep_pid}")).exists();
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(),
        "the build's `sleep` ({sleep_pid}) outlived the host"
    );
}
