//! `host package`: the image is read by real OCI tools (skopeo, umoci), its
//! root file system is unpacked and its entrypoint run as an arbitrary user
//! (uid 2020) on a read-only root with a `tmpfs` at `/tmp`, as a container
//! runtime would, and served. Needs root (for `unshare --mount`), and skopeo
//! and umoci (`scripts/setup` installs them).

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use common::{Host, example, http1, manifest, write};

/// How long a packaged host may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The warning a host logs for a precompiled artifact it cannot use.
const OTHER_CPU: &str = "precompiled for other CPU features or engine settings; compiling here";

/// A manifest in `dir` with two example functions.
fn two_functions(dir: &Path) -> PathBuf {
    manifest(
        dir,
        &[
            ("hello", &example("hello"), &["/hello"], &[]),
            ("echo", &example("echo"), &["/echo"], &[]),
        ],
    )
}

/// Runs `host package <manifest> --out <out> <args>` with extra environment.
fn package(manifest: &Path, out: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(common::host_binary())
        .arg("package")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .envs(env.iter().copied())
        .output()
        .expect("cannot run the host binary")
}

/// Runs a tool and returns its stdout, failing the test if it fails.
fn tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/setup installs it): {e}"));
    common::succeeded(&output)
}

/// The image configuration, as skopeo reads it from the layout.
fn config(layout: &Path, tag: &str) -> serde_json::Value {
    let reference = format!("oci:{}:{tag}", layout.display());
    serde_json::from_str(&tool("skopeo", &["inspect", "--config", &reference])).unwrap()
}

/// Unpacks the image with umoci into `bundle`; returns its root file
/// system.
fn unpack(layout: &Path, bundle: &Path) -> PathBuf {
    let image = format!("{}:latest", layout.display());
    tool(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &image,
            bundle.to_str().unwrap(),
        ],
    );
    bundle.join("rootfs")
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The image's entrypoint, running as a container runtime would start it:
/// in a mount namespace where `rootfs` is read-only with a `tmpfs` at
/// `/tmp` and procfs at `/proc`, chrooted into it, as uid and gid 2020, with
/// only the image's environment and `env` over it. It listens on loopback
/// only: `--listen` and `--admin-listen` are appended to the entrypoint, as
/// a pod's `args` would be. Every program in the chain execs the next, so
/// the host keeps the PID that [`Host`] signals.
fn start_container(rootfs: &Path, config: &serde_json::Value, env: &[&str]) -> Host {
    let mut image_env = strings(&config["config"]["Env"]);
    image_env.extend(env.iter().map(|var| var.to_string()));
    let entrypoint = strings(&config["config"]["Entrypoint"]);
    let chroot = tool("sh", &["-c", "command -v chroot"]);
    // Like a container runtime, create the mount point for /proc (the
    // runtime maps artifacts through /proc/self/fd).
    std::fs::create_dir_all(rootfs.join("proc")).unwrap();
    let script = "mount --make-rprivate / && mount --bind \"$0\" \"$0\" \
                  && mount -o remount,ro,bind \"$0\" \
                  && mount -t tmpfs -o mode=1777 tmpfs \"$0/tmp\" \
                  && mount -t proc proc \"$0/proc\" && exec env -i \"$@\"";
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "sh", "-c", script])
        .arg(rootfs)
        .args(&image_env)
        .args([chroot.trim(), "--userspec=2020:2020"])
        .arg(rootfs)
        .args(&entrypoint)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    let host = Host::launch(command, &rootfs.join("tmp")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        host.wait_for_log("ready: every component is compiled", START_TIMEOUT),
        "the functions did not compile:\n{}",
        host.log()
    );
    host
}

/// The host's log lines that contain every one of `needles`.
fn lines_with(host: &Host, needles: &[&str]) -> Vec<String> {
    host.log()
        .lines()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .map(str::to_owned)
        .collect()
}

/// Sends SIGTERM to the host and waits for it to exit.
fn stop(mut host: Host) -> ExitStatus {
    host.signal("TERM");
    host.wait_exit(Duration::from_secs(30))
}

/// GET /hello and POST /echo, answered by the packaged host.
async fn check_serves(container: &Host) {
    let client = http1();
    let hello = client.get(container.url("/hello")).send().await.unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.text().await.unwrap(), "Hello, world!\n");
    let echo = client
        .post(container.url("/echo"))
        .body("sent to the image")
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
    assert_eq!(echo.text().await.unwrap(), "sent to the image");
}

/// The artifact files in the unpacked image.
fn artifacts(rootfs: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(rootfs.join("shoal/artifacts"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_is_read_by_oci_tools_and_serves_as_any_user_from_a_read_only_root() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: running the image needs root (unshare --mount, chroot)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("image");
    let archive = dir.path().join("image.tar");
    let printed = common::succeeded(&package(
        &two_functions(dir.path()),
        &layout,
        &["--tar", archive.to_str().unwrap()],
        &[],
    ));

    // The configuration, as skopeo reads it.
    let image = config(&layout, "latest");
    let settings = &image["config"];
    assert_eq!(
        strings(&settings["Entrypoint"]),
        ["/shoal/bin/host", "run", "/shoal/shoal.toml"]
    );
    assert!(settings.get("Cmd").is_none(), "{settings}");
    assert_eq!(settings["User"], "65532:65532");
    assert_eq!(settings["WorkingDir"], "/");
    let env = strings(&settings["Env"]);
    for var in ["PORT=8080", "SHOAL_PRECOMPILED=/shoal/artifacts"] {
        assert!(env.iter().any(|e| e == var), "{var} not in {env:?}");
    }
    assert!(
        settings["ExposedPorts"].get("8080/tcp").is_some(),
        "{settings}"
    );
    let labels = &settings["Labels"];
    assert_eq!(labels["dev.shoal.functions"], "hello,echo");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    for label in ["title", "description"] {
        let value = labels[format!("org.opencontainers.image.{label}")]
            .as_str()
            .unwrap();
        assert!(!value.is_empty(), "no {label}");
    }

    // The archive holds the same image, under the printed digest.
    let reference = format!("oci-archive:{}", archive.display());
    let from_archive: serde_json::Value =
        serde_json::from_str(&tool("skopeo", &["inspect", &reference])).unwrap();
    assert_eq!(from_archive["Digest"], printed.trim());

    // The root file system, as umoci unpacks it.
    let rootfs = unpack(&layout, &dir.path().join("bundle"));
    let mode = |path: &str| {
        std::fs::metadata(rootfs.join(path))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode("tmp") & 0o7777, 0o1777);
    assert_eq!(mode("shoal/bin/host") & 0o777, 0o755);
    assert_eq!(std::fs::read_dir(rootfs.join("tmp")).unwrap().count(), 0);
    for name in ["hello", "echo"] {
        let packaged = std::fs::read(rootfs.join(format!("shoal/functions/{name}.wasm"))).unwrap();
        assert_eq!(packaged, std::fs::read(example(name)).unwrap(), "{name}");
    }
    let manifest = std::fs::read_to_string(rootfs.join("shoal/shoal.toml")).unwrap();
    assert!(
        manifest.contains("component = \"functions/hello.wasm\""),
        "{manifest}"
    );
    assert!(
        manifest.contains("component = \"functions/echo.wasm\""),
        "{manifest}"
    );
    assert_eq!(artifacts(&rootfs).len(), 2, "{:?}", artifacts(&rootfs));

    // Run, served, and the precompiled artifacts used: nothing compiled.
    let container = start_container(&rootfs, &image, &[]);
    check_serves(&container).await;
    for function in ["function=hello", "function=echo"] {
        let loaded = lines_with(
            &container,
            &["loaded from the precompiled artifacts", function],
        );
        assert_eq!(loaded.len(), 1, "{function}:\n{}", container.log());
    }
    assert!(
        lines_with(&container, &["component compiled"]).is_empty(),
        "{}",
        container.log()
    );
    let status = stop(container);
    assert!(status.success(), "the host exited with {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn portable_artifacts_serve_a_portable_host_and_a_native_host_logs_and_compiles_them_again() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: running the image needs root (unshare --mount, chroot)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("image");
    common::succeeded(&package(
        &two_functions(dir.path()),
        &layout,
        &["--cpu", "portable"],
        &[],
    ));
    let image = config(&layout, "latest");
    let env = strings(&image["config"]["Env"]);
    assert!(env.iter().any(|e| e == "SHOAL_CPU=portable"), "{env:?}");
    let rootfs = unpack(&layout, &dir.path().join("bundle"));
    assert_eq!(artifacts(&rootfs).len(), 2, "{:?}", artifacts(&rootfs));

    // As the image says: the host compiles for the portable CPU too, and
    // uses the artifacts.
    let container = start_container(&rootfs, &image, &[]);
    check_serves(&container).await;
    for function in ["function=hello", "function=echo"] {
        let loaded = lines_with(
            &container,
            &["loaded from the precompiled artifacts", function],
        );
        assert_eq!(loaded.len(), 1, "{function}:\n{}", container.log());
    }
    assert!(
        lines_with(&container, &[OTHER_CPU]).is_empty(),
        "{}",
        container.log()
    );
    let status = stop(container);
    assert!(status.success(), "the host exited with {status}");

    // A host compiling for this CPU (with features beyond the baseline)
    // cannot use them: it says so, for each function, and compiles.
    let container = start_container(&rootfs, &image, &["SHOAL_CPU=native"]);
    check_serves(&container).await;
    for function in ["function=hello", "function=echo"] {
        let warned = lines_with(&container, &["WARN", OTHER_CPU, function]);
        assert_eq!(warned.len(), 1, "{function}:\n{}", container.log());
        let compiled = lines_with(&container, &["component compiled", function]);
        assert_eq!(compiled.len(), 1, "{function}:\n{}", container.log());
    }
    assert!(
        lines_with(&container, &["loaded from the precompiled artifacts"]).is_empty(),
        "{}",
        container.log()
    );
    let status = stop(container);
    assert!(status.success(), "the host exited with {status}");
}

#[test]
fn packaging_twice_gives_the_same_digests_and_source_date_epoch_sets_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = two_functions(dir.path());
    let layout = |name: &str| dir.path().join(name);
    let first = common::succeeded(&package(&manifest, &layout("first"), &[], &[]));
    let second = common::succeeded(&package(&manifest, &layout("second"), &[], &[]));
    assert_eq!(first, second);
    for file in ["index.json", "oci-layout"] {
        assert_eq!(
            std::fs::read(layout("first").join(file)).unwrap(),
            std::fs::read(layout("second").join(file)).unwrap(),
            "{file}"
        );
    }
    let blobs = |name: &str| {
        let mut blobs: Vec<_> = std::fs::read_dir(layout(name).join("blobs/sha256"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        blobs.sort();
        blobs
    };
    assert_eq!(blobs("first"), blobs("second"));

    // Another time: another image, dated then.
    let dated = common::succeeded(&package(
        &manifest,
        &layout("dated"),
        &[],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    ));
    assert_ne!(first, dated);
    let labels = &config(&layout("dated"), "latest")["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );
}

#[test]
fn a_bad_component_fails_packaging_with_its_reason_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.wasm", "not WebAssembly");
    let manifest = manifest(
        dir.path(),
        &[
            ("hello", &example("hello"), &["/hello"], &[]),
            ("bad", &bad, &["/bad"], &[]),
        ],
    );
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    let layout = dir.path().join("image");
    let archive = dir.path().join("image.tar");
    let output = package(
        &manifest,
        &layout,
        &["--tar", archive.to_str().unwrap()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("function `bad` cannot be packaged"),
        "{stderr}"
    );
    assert!(
        stderr.contains("is not a WebAssembly component"),
        "{stderr}"
    );
    assert!(!layout.exists() && !archive.exists());
    let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(before.len(), after.len(), "something was left: {after:?}");

    // Nor for a host binary that is not a host.
    let good = manifest_of_hello(dir.path());
    let output = package(&good, &layout, &["--host-binary", "/bin/true"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("/bin/true is not a Shoal host"), "{stderr}");
    assert!(!layout.exists());

    // A folder that is not an image layout is never replaced.
    let precious = dir.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    write(&precious, "notes.txt", "keep me");
    let output = package(&good, &precious, &[], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("is not an OCI layout"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(precious.join("notes.txt")).unwrap(),
        "keep me"
    );
}

/// A manifest in `dir/hello` with the hello example alone.
fn manifest_of_hello(dir: &Path) -> PathBuf {
    let dir = dir.join("hello");
    std::fs::create_dir(&dir).unwrap();
    manifest(&dir, &[("hello", &example("hello"), &["/hello"], &[])])
}
