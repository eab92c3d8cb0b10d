//! Start-up: bad manifests and bad components are refused with the file,
//! the field or the function, and the reason; compiled artifacts are cached
//! and a damaged one is never run.

use crate::common;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use common::{Host, example, http1, manifest, repo, run_to_exit, run_to_exit_with, write};

/// Each fixture in `tests/manifests` starts with `# expect: <text>` lines;
/// the host must refuse it, and its error must contain every such text.
#[test]
fn each_bad_manifest_is_refused_with_its_expected_error() {
    let dir = repo().join("host/tests/manifests");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 10,
        "fixtures missing from {}",
        dir.display()
    );
    let data = tempfile::tempdir().unwrap();

    for fixture in fixtures {
        let text = std::fs::read_to_string(&fixture).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            fixture.display()
        );

        let (status, stderr) = run_to_exit(&fixture, data.path());
        assert_eq!(
            status.code(),
            Some(1),
            "{} was not refused:\n{stderr}",
            fixture.display()
        );
        for text in expected {
            assert!(
                stderr.contains(text),
                "{}: expected {text:?} in:\n{stderr}",
                fixture.display()
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// The host's error output when it serves `component`: it must exit 1.
fn refused(component: &Path) -> String {
    let data = tempfile::tempdir().unwrap();
    let manifest = manifest(data.path(), &[("broken", component, &["/broken"], &[])]);
    let (status, stderr) = run_to_exit(&manifest, data.path());
    assert_eq!(
        status.code(),
        Some(1),
        "{} was not refused:\n{stderr}",
        component.display()
    );
    stderr
}

#[test]
fn a_file_that_is_not_a_component_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();

    let garbage = write(dir.path(), "garbage.wasm", b"this is not wasm at all");
    let output = refused(&garbage);
    assert!(output.contains("function `broken`"), "{output}");
    assert!(
        output.contains("garbage.wasm is not a WebAssembly component"),
        "{output}"
    );

    let core = write(dir.path(), "core.wasm", wat::parse_str("(module)").unwrap());
    let output = refused(&core);
    assert!(output.contains("function `broken`"), "{output}");
    assert!(
        output.contains("core.wasm is a core WebAssembly module, not a component"),
        "{output}"
    );

    let truncated_bytes = std::fs::read(example("hello")).unwrap();
    let truncated = write(
        dir.path(),
        "truncated.wasm",
        &truncated_bytes[..truncated_bytes.len() / 2],
    );
    let output = refused(&truncated);
    assert!(
        output.contains("truncated.wasm does not compile"),
        "{output}"
    );
}

#[test]
fn a_fifo_named_as_a_component_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Opening a FIFO without a writer would block the host forever.
    let output = refused(&fifo);
    assert!(
        output.contains("fifo.wasm is not a regular file"),
        "{output}"
    );
}

#[test]
fn flags_out_of_range_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    for (flag, value) in [
        ("--max-connections", "0"),
        ("--max-instances", "0"),
        ("--max-header-size", "4KiB"),
        ("--max-header-size", "2MiB"),
        ("--idle-timeout", "0s"),
        ("--header-read-timeout", "0s"),
        ("--send-timeout", "0s"),
        ("--memory-budget", "1KiB"),
        ("--keep-code", "lots"),
        ("--keep-code", "1MiBs"),
    ] {
        let (status, stderr) = run_to_exit_with(&manifest, dir.path(), &[flag, value]);
        assert_eq!(
            status.code(),
            Some(2),
            "{flag} {value} was taken:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag}")),
            "{flag} {value}:\n{stderr}"
        );
    }
}

#[test]
fn a_component_whose_imports_cannot_be_satisfied_is_refused_naming_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let component = wat::parse_str(
        r#"(component
            (import "shoal:test/missing-interface" (instance (export "f" (func))))
        )"#,
    )
    .unwrap();
    let output = refused(&write(dir.path(), "imports.wasm", component));
    assert!(
        output.contains("function `broken`: its imports cannot be satisfied"),
        "{output}"
    );
    assert!(output.contains("shoal:test/missing-interface"), "{output}");
}

#[test]
fn a_component_without_an_http_handler_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let component = wat::parse_str("(component)").unwrap();
    let output = refused(&write(dir.path(), "inert.wasm", component));
    assert!(
        output.contains("function `broken`: it is not a wasi:http handler"),
        "{output}"
    );
    assert!(output.contains("wasi:http/incoming-handler"), "{output}");
}

#[tokio::test]
async fn the_second_start_loads_the_cached_artifact_and_a_damaged_one_is_recompiled() {
    let data = tempfile::tempdir().unwrap();
    let manifest = manifest(
        data.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    let start = || Host::start_with(&manifest, data.path(), &[], &[]).unwrap();
    let hello = |host: &Host| {
        let url = host.url("/hello");
        async move { http1().get(url).send().await.unwrap().text().await.unwrap() }
    };

    let compiled = |host: &Host, how: &str| {
        host.wait_for_line(Duration::from_secs(30), |l| {
            l.contains(how) && l.contains("hello.wasm")
        })
        .unwrap_or_else(|| panic!("no {how:?} in:\n{}", host.log()))
    };

    let host = start();
    compiled(&host, "component compiled");
    assert_eq!(hello(&host).await, "Hello, world!\n");
    drop(host);

    let host = start();
    compiled(&host, "component loaded from the artifact cache");
    assert_eq!(hello(&host).await, "Hello, world!\n");
    drop(host);

    // Damage the artifact: the digest check must catch it before wasmtime
    // maps it, and the function must be compiled again.
    let artifacts = data.path().join("artifacts");
    let artifact = std::fs::read_dir(&artifacts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension() == Some(OsStr::new("cwasm")))
        .expect("an artifact in the cache");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, bytes).unwrap();

    let host = start();
    compiled(&host, "component compiled again");
    let log = host.log();
    assert!(log.contains("discarding a cached artifact"), "{log}");
    assert!(
        log.contains("its contents do not match its digest"),
        "{log}"
    );
    assert_eq!(hello(&host).await, "Hello, world!\n");
    drop(host);

    // The rewritten artifact is good again.
    let host = start();
    compiled(&host, "component loaded from the artifact cache");
}

#[tokio::test]
async fn without_room_for_the_pool_instances_are_allocated_on_demand() {
    let data = tempfile::tempdir().unwrap();
    // 20 GB of address space: far too little for the instance pool, enough
    // for a few instances allocated one by one.
    let host = Host::start_with_address_space(&example("hello"), data.path(), 20_000_000).unwrap();
    let log = host.log();
    assert!(
        log.contains("the instance pool cannot be reserved here"),
        "{log}"
    );
    assert!(log.contains("instances are allocated on demand"), "{log}");
    assert_eq!(host.get("/").await, (200, "Hello, world!\n".to_owned()));
}

#[tokio::test]
async fn a_pool_too_big_for_the_address_space_is_sized_down() {
    let data = tempfile::tempdir().unwrap();
    // 300 GB of address space holds a few dozen instance slots, not 1,000.
    let host = Host::start_with_address_space(&example("hello"), data.path(), 300_000_000).unwrap();
    let log = host.log();
    assert!(
        log.contains("the instance pool was sized down to fit the address space"),
        "{log}"
    );
    assert!(!log.contains("allocating instances on demand"), "{log}");
    assert_eq!(host.get("/").await, (200, "Hello, world!\n".to_owned()));
}
