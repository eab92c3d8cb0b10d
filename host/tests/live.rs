//! Functions change while the host serves: `--watch` and SIGHUP apply a
//! changed manifest or component without failing a request, a broken edit
//! keeps the old version serving, and a thousand changes leave nothing
//! behind.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Host, example, guest, http1, write};

/// Replaces `path` with a copy of `component` the way build tools do: a new
/// file renamed over the old one.
fn replace(path: &Path, component: &Path) {
    let next = path.with_extension("next");
    std::fs::copy(component, &next).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// A copy of `component` at `dir/name`.
fn copy(dir: &Path, name: &str, component: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(component, &path).unwrap();
    path
}

/// Waits until `check` holds of the admin API's view of function `name`
/// (`None` if the function is gone).
async fn wait_for_function(
    host: &Host,
    name: &str,
    timeout: Duration,
    check: impl Fn(Option<&serde_json::Value>) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let functions = host.functions().await;
        let function = functions.iter().find(|f| f["name"] == name);
        if check(function) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never got there: {function:?}\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The admin API's digest of function `name`'s component.
async fn component_of(host: &Host, name: &str) -> String {
    host.function(name).await["component"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What a load loop saw of each request: when it was sent, when its answer
/// was read, which path, status and body.
type Seen = Vec<(Instant, Instant, &'static str, u16, String)>;

/// Sends requests to `path` over one keep-alive connection until `stop`.
async fn keep_asking(host_url: String, path: &'static str, stop: Arc<AtomicBool>) -> Seen {
    let client = http1();
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let (status, body) = match client.get(format!("{host_url}{path}")).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(error) => (0, error.to_string()),
        };
        seen.push((sent, Instant::now(), path, status, body));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_swaps_a_component_under_load_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let changing = copy(dir.path(), "f.wasm", &example("hello"));
    let manifest = common::manifest(
        dir.path(),
        &[
            ("f", &changing, &["/f"], &[]),
            ("steady", &example("hello"), &["/steady"], &[]),
        ],
    );
    let host = Host::start_with(&manifest, dir.path(), &["--watch"], &[]).unwrap();
    assert_eq!(host.get("/f").await, (200, "Hello, world!\n".to_owned()));
    let before = component_of(&host, "f").await;

    let stop = Arc::new(AtomicBool::new(false));
    let url = host.url("");
    let loads: Vec<_> = [("/f"), ("/f"), ("/steady"), ("/steady")]
        .into_iter()
        .map(|path| tokio::spawn(keep_asking(url.clone(), path, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let changed_at = Instant::now();
    replace(&changing, &guest("counter"));
    tokio::time::sleep(Duration::from_millis(4000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen: Seen = Vec::new();
    for load in loads {
        seen.extend(load.await.unwrap());
    }

    let failed: Vec<_> = seen
        .iter()
        .filter(|(.., status, _)| *status != 200)
        .collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        seen.iter()
            .filter(|(_, _, path, ..)| *path == "/steady")
            .all(|(.., body)| body == "Hello, world!\n"),
        "the unchanged function changed"
    );
    let f: Vec<_> = seen
        .iter()
        .filter(|(_, _, path, ..)| *path == "/f")
        .collect();
    assert!(f.len() > 20, "too few requests to tell: {}", f.len());
    let first_new = f
        .iter()
        .filter(|(.., body)| body == "1\n")
        .min_by_key(|(_, answered, ..)| *answered)
        .unwrap_or_else(|| panic!("the new version never answered:\n{}", host.log()));
    // The swap waits out the watcher's quiet period and compiles the new
    // component, in a debug build, under this load and beside the file's
    // other tests: it once took 1.05 s here, so the bound leaves room.
    let took = first_new.1 - changed_at;
    assert!(
        took < Duration::from_secs(2),
        "the new version took {took:?}"
    );
    // Once the new version answered, no request sent after that met the
    // old one. (A request sent before may still finish on the old version
    // after it: the two loads on `/f` overlap.)
    assert!(
        f.iter()
            .filter(|(sent, ..)| *sent > first_new.1)
            .all(|(.., body)| body == "1\n"),
        "the old version answered after the new one"
    );
    assert_ne!(component_of(&host, "f").await, before);
    assert!(
        host.log()
            .contains("reloaded (a watched file changed): changed f")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_edit_keeps_the_previous_version_serving_until_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let component = copy(dir.path(), "f.wasm", &example("hello"));
    let good = "[[function]]\nname = \"f\"\ncomponent = \"f.wasm\"\nroutes = [\"/f\"]\n";
    let manifest = write(dir.path(), "shoal.toml", good);
    let host = Host::start_with(&manifest, dir.path(), &["--watch"], &[]).unwrap();
    assert_eq!(host.get("/f").await.0, 200);
    let before = component_of(&host, "f").await;

    // A component that is not one.
    std::fs::write(&component, "not wasm at all").unwrap();
    let refused = host
        .wait_for_line(Duration::from_secs(5), |l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{}", host.log()));
    assert!(refused.contains("function `f`"), "{refused}");
    assert!(
        refused.contains("is not a WebAssembly component"),
        "{refused}"
    );
    assert_eq!(host.get("/f").await, (200, "Hello, world!\n".to_owned()));

    // A manifest with a typo: the error names the file, line and field.
    write(dir.path(), "shoal.toml", good.replace("routes", "rutes"));
    assert!(
        host.wait_for_log("unknown field `rutes`", Duration::from_secs(5)),
        "{}",
        host.log()
    );
    assert!(host.log().contains("shoal.toml:4:1"), "{}", host.log());
    assert_eq!(host.get("/f").await, (200, "Hello, world!\n".to_owned()));

    // Both fixed: the new version serves.
    replace(&component, &guest("counter"));
    write(dir.path(), "shoal.toml", good);
    wait_for_function(&host, "f", Duration::from_secs(5), |f| {
        f.is_some_and(|f| f["component"] != before.as_str())
    })
    .await;
    assert_eq!(host.get("/f").await, (200, "1\n".to_owned()));
    let status = host.status().await;
    assert_eq!(status["functions"], 1);
    let refusals = host.metrics().await["shoal_registry_changes_total{result=\"refused\"}"];
    assert!(refusals >= 2.0, "{refusals}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_moves_a_route_and_removes_a_function_once_its_requests_end() {
    let dir = tempfile::tempdir().unwrap();
    let slow = guest("slow");
    let decls = |a_routes: &[&str], b_routes: Option<&[&str]>| {
        let mut text =
            format!("[[function]]\nname = \"a\"\ncomponent = {slow:?}\nroutes = {a_routes:?}\n\n");
        if let Some(b_routes) = b_routes {
            text.push_str(&format!(
                "[[function]]\nname = \"b\"\ncomponent = {slow:?}\nroutes = {b_routes:?}\n"
            ));
        }
        text
    };
    let manifest = write(
        dir.path(),
        "shoal.toml",
        decls(&["/a", "/shared"], Some(&["/b"])),
    );
    let host = Host::start_with(&manifest, dir.path(), &[], &[]).unwrap();
    assert_eq!(host.get("/shared?ms=1").await.0, 200);
    let generation = host.status().await["generation"].as_u64().unwrap();

    // The route moves from a to b in one change.
    write(
        dir.path(),
        "shoal.toml",
        decls(&["/a"], Some(&["/b", "/shared"])),
    );
    host.signal("HUP");
    wait_for_function(&host, "b", Duration::from_secs(5), |b| {
        b.is_some_and(|b| b["routes"] == serde_json::json!(["/b", "/shared"]))
    })
    .await;
    assert_eq!(
        host.function("a").await["routes"],
        serde_json::json!(["/a"])
    );
    assert_eq!(
        host.status().await["generation"].as_u64(),
        Some(generation + 1)
    );
    // The request log says which function answered.
    assert_eq!(host.get("/shared?ms=1").await.0, 200);
    assert!(
        host.wait_for_line(Duration::from_secs(2), |l| l.contains("function=b")
            && l.contains("route=/shared"))
            .is_some(),
        "{}",
        host.log()
    );

    // b is removed while a request to it is in flight: that request ends
    // on the version it started on; new ones find no route.
    let in_flight = tokio::spawn(http1().get(host.url("/b?ms=1500")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    write(dir.path(), "shoal.toml", decls(&["/a"], None));
    host.signal("HUP");
    wait_for_function(&host, "b", Duration::from_secs(5), |b| b.is_none()).await;
    assert_eq!(host.get("/b?ms=1").await.0, 404);
    assert_eq!(host.get("/shared?ms=1").await.0, 404);
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "slept 1500 ms\n");
    assert_eq!(host.get("/a?ms=1").await.0, 200);
    // A removed function's series are gone.
    let metrics = host.metrics().await;
    assert!(
        !metrics.keys().any(|k| k.contains("function=\"b\"")),
        "b's series stayed"
    );
    assert!(metrics.keys().any(|k| k.contains("function=\"a\"")));
    // a was changed (its routes), not removed: its counters went on across
    // both changes (one answer before them, one after).
    assert_eq!(
        metrics.get(r#"shoal_requests_total{class="2xx",function="a",revision=""}"#),
        Some(&2.0),
        "{metrics:?}"
    );
}

/// The process's open descriptors.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The process's mappings of files under `dir` (compiled artifacts).
fn mapped_under(pid: u32, dir: &Path) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let dir = dir.to_string_lossy();
    maps.lines()
        .filter(|line| line.contains(dir.as_ref()))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_changes_leave_memory_files_and_mappings_where_they_were() {
    const CHANGES: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let versions = [example("hello"), guest("counter")];
    let manifest_for = |n: usize| {
        format!(
            "[[function]]\nname = \"f\"\ncomponent = {:?}\nroutes = [\"/f\"]\nenv = {{ N = \"{n}\" }}\n\n\
             [[function]]\nname = \"steady\"\ncomponent = {:?}\nroutes = [\"/steady\"]\n",
            versions[n % 2],
            example("hello"),
        )
    };
    let manifest = write(dir.path(), "shoal.toml", manifest_for(0));
    let host = Host::start_with(&manifest, dir.path(), &[], &[]).unwrap();
    let pid = host.pid();
    let mut generation = host.status().await["generation"].as_u64().unwrap();
    let mut measured = Vec::new();
    let started = Instant::now();
    for n in 1..=CHANGES {
        write(dir.path(), "shoal.toml", manifest_for(n));
        host.signal("HUP");
        // Each change is applied before the next: SIGHUPs sent together
        // would merge into one reload.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = host.status().await["generation"].as_u64().unwrap();
            if now > generation {
                generation = now;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {n} was not applied:\n{}",
                host.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Warm both functions, so that each change maps an artifact.
        let expected = if n % 2 == 0 { "Hello, world!\n" } else { "1\n" };
        assert_eq!(
            host.get("/f").await,
            (200, expected.to_owned()),
            "change {n}"
        );
        assert_eq!(host.get("/steady").await.0, 200);
        if n == 100 || n == CHANGES {
            measured.push((
                host.memory_kib("VmRSS"),
                open_files(pid),
                mapped_under(pid, host.data_dir()),
            ));
        }
    }
    println!("{CHANGES} changes in {:?}: {measured:?}", started.elapsed());
    let [
        (rss_100, files_100, maps_100),
        (rss_end, files_end, maps_end),
    ] = measured[..]
    else {
        unreachable!()
    };
    assert!(
        rss_end < rss_100 + 16 * 1024,
        "RSS grew from {rss_100} KiB to {rss_end} KiB"
    );
    assert!(
        files_end <= files_100 + 4,
        "open files grew from {files_100} to {files_end}"
    );
    assert!(
        maps_end <= maps_100,
        "artifact mappings grew from {maps_100} to {maps_end}"
    );
    assert!(maps_end > 0, "no artifact is mapped: the count is wrong");
    assert_eq!(host.function("steady").await["cold_starts"], 1);
}
