//! A function's life: compiled in the background, warmed by its first
//! request, scaled to zero when idle, kept warm by `min_instances`; and the
//! admin API that shows it.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Host, example, http1, wait_for, write};

/// Polls the admin API until function `name` is in `state`.
async fn wait_for_state(
    host: &Host,
    name: &str,
    state: &str,
    timeout: Duration,
) -> serde_json::Value {
    wait_for(host, name, "state", state, timeout).await
}

#[tokio::test]
async fn an_idle_function_scales_to_zero_and_its_next_request_cold_starts() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(
        dir.path(),
        "shoal.toml",
        format!(
            "[[function]]\nname = \"hello\"\ncomponent = {:?}\nroutes = [\"/hello\"]\nidle_timeout = \"300ms\"\n",
            example("hello")
        ),
    );
    let host = Host::start(&manifest);
    let function = wait_for_state(&host, "hello", "compiled", Duration::from_secs(30)).await;
    assert_eq!(host.status().await["warm"], 0);
    assert_eq!(function["cold_starts"], 0);
    assert_eq!(function["idle_timeout_ms"], 300);
    assert_eq!(function["routes"], serde_json::json!(["/hello"]));

    assert_eq!(
        host.get("/hello").await,
        (200, "Hello, world!\n".to_owned())
    );
    let function = host.function("hello").await;
    assert_eq!(
        (function["state"].as_str(), function["cold_starts"].as_u64()),
        (Some("warm"), Some(1))
    );
    assert_eq!(host.status().await["warm"], 1);

    // Kept warm while used: requests well inside the timeout.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(host.get("/hello").await.0, 200);
    }
    assert_eq!(host.function("hello").await["cold_starts"], 1);

    let series = |metrics: &std::collections::HashMap<String, f64>, name: &str| {
        metrics
            .get(&format!("{name}{{function=\"hello\",revision=\"\"}}"))
            .copied()
    };
    let warm = host.metrics().await;
    assert_eq!(
        series(&warm, "shoal_request_duration_seconds_count"),
        Some(6.0)
    );
    assert_eq!(series(&warm, "shoal_instances_in_flight"), Some(0.0));

    // Idle: back to compiled, then cold-started again by the next request.
    wait_for_state(&host, "hello", "compiled", Duration::from_secs(5)).await;
    assert_eq!(host.status().await["warm"], 0);
    assert!(host.wait_for_log("scaled to zero function=hello", Duration::from_secs(1)));
    // At rest, it keeps its counters and loses its histograms and gauges.
    let at_rest = host.metrics().await;
    assert_eq!(series(&at_rest, "shoal_cold_starts_total"), Some(1.0));
    assert_eq!(
        series(&at_rest, "shoal_request_duration_seconds_count"),
        None
    );
    assert_eq!(
        series(&at_rest, "shoal_cold_start_duration_seconds_count"),
        None
    );
    assert_eq!(series(&at_rest, "shoal_instances_in_flight"), None);
    assert_eq!(at_rest["shoal_host_request_duration_seconds_count"], 6.0);
    assert_eq!(
        host.get("/hello").await,
        (200, "Hello, world!\n".to_owned())
    );
    let function = host.function("hello").await;
    assert_eq!(
        (function["state"].as_str(), function["cold_starts"].as_u64()),
        (Some("warm"), Some(2))
    );
    let again = host.metrics().await;
    assert_eq!(
        series(&again, "shoal_request_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(series(&again, "shoal_cold_starts_total"), Some(2.0));

    // The log line follows the count; give the log a moment to catch up.
    let is_cold_start = |l: &str| l.contains("cold start") && l.contains("function=hello");
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.log().lines().filter(|l| is_cold_start(l)).count() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cold_starts: Vec<String> = host
        .log()
        .lines()
        .filter(|l| is_cold_start(l))
        .map(str::to_owned)
        .collect();
    assert_eq!(cold_starts.len(), 2, "{cold_starts:?}");
    assert!(
        cold_starts.iter().all(|l| l.contains("elapsed_ms=")),
        "{cold_starts:?}"
    );
}

#[tokio::test]
async fn min_instances_keeps_a_function_warm() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(
        dir.path(),
        "shoal.toml",
        format!(
            "[[function]]\nname = \"kept\"\ncomponent = {hello:?}\nroutes = [\"/kept\"]\n\
             idle_timeout = \"100ms\"\nmin_instances = 1\n\n\
             [[function]]\nname = \"dropped\"\ncomponent = {hello:?}\nroutes = [\"/dropped\"]\n\
             idle_timeout = \"100ms\"\n",
            hello = example("hello")
        ),
    );
    let host = Host::start(&manifest);
    // Warmed without a request.
    wait_for_state(&host, "kept", "warm", Duration::from_secs(30)).await;
    assert_eq!(host.get("/kept").await.0, 200);
    assert_eq!(host.get("/dropped").await.0, 200);

    // Ten idle timeouts later, one scaled to zero and the other did not.
    wait_for_state(&host, "dropped", "compiled", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kept = host.function("kept").await;
    assert_eq!(kept["state"], "warm");
    assert_eq!(kept["min_instances"], 1);
    assert_eq!(kept["cold_starts"], 1, "warmed once, at start");
}

#[tokio::test]
async fn a_request_for_a_function_still_compiling_goes_first_and_succeeds() {
    const FUNCTIONS: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for n in 0..FUNCTIONS {
        let component = common::variant(dir.path(), &example("echo"), n);
        text.push_str(&format!(
            "[[function]]\nname = \"f{n}\"\ncomponent = {component:?}\nroutes = [\"/f{n}\"]\n\n"
        ));
    }
    let host = Host::start(&write(dir.path(), "shoal.toml", text));

    // The last function's component is last in the queue; asking for it
    // moves it to the front.
    let last = format!("f{}", FUNCTIONS - 1);
    let response = http1()
        .post(host.url(&format!("/{last}")))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hi");

    let functions = host.functions().await;
    let not_compiled = functions
        .iter()
        .filter(|f| f["state"] == "registered" || f["state"] == "compiling")
        .count();
    assert!(
        not_compiled > 0,
        "every component was compiled before the request was answered: it did not go first"
    );
    let line = host
        .wait_for_line(Duration::from_secs(1), |l| {
            l.contains("cold start") && l.contains(&format!("function={last} "))
        })
        .unwrap();
    assert!(line.contains("waited_for_compile_ms="), "{line}");

    // And the rest finish compiling.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let functions = host.functions().await;
        if functions
            .iter()
            .all(|f| f["state"] == "compiled" || f["state"] == "warm")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every component compiled: {functions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_artifact_from_another_engine_is_compiled_again_never_run() {
    use sha2::{Digest, Sha256};
    let data = tempfile::tempdir().unwrap();
    let manifest = common::manifest(
        data.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );

    // A first start writes the artifact.
    let host = Host::start_with(&manifest, data.path(), &[], &[]).unwrap();
    wait_for_state(&host, "hello", "compiled", Duration::from_secs(30)).await;
    drop(host);

    // Replace it with bytes whose digest matches but that no engine made:
    // only wasmtime's own checks can refuse it.
    let artifacts = data.path().join("artifacts");
    let artifact = std::fs::read_dir(&artifacts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    // Its header (binding it to this component and engine) is kept, and
    // names the forged bytes' digest and length.
    let forged = b"\x7fELF not an artifact of this engine".repeat(100);
    let original = std::fs::read(&artifact).unwrap();
    let header: Vec<String> = original
        .split(|&byte| byte == b'\n')
        .take(3)
        .map(|line| String::from_utf8(line.to_vec()).unwrap())
        .collect();
    assert_eq!(header[0], "shoal-artifact 1", "{header:?}");
    let mut file = format!(
        "{}\n{}\n{}\nartifact {} {}\n\n",
        header[0],
        header[1],
        header[2],
        hex(&Sha256::digest(&forged)),
        forged.len()
    )
    .into_bytes();
    file.extend_from_slice(&forged);
    std::fs::write(&artifact, file).unwrap();

    let host = Host::start_with(&manifest, data.path(), &[], &[]).unwrap();
    wait_for_state(&host, "hello", "compiled", Duration::from_secs(30)).await;
    // The log has its own writing thread: the line may reach stderr after
    // the admin API reports the function compiled.
    assert!(
        host.wait_for_log("component compiled again", Duration::from_secs(10)),
        "{}",
        host.log()
    );
    let log = host.log();
    assert!(log.contains("discarding a cached artifact"), "{log}");
    assert!(log.contains("wasmtime refuses it"), "{log}");
    assert_eq!(
        host.get("/hello").await,
        (200, "Hello, world!\n".to_owned())
    );
}

/// The artifact cache keeps what the host serves and what any host sharing
/// it used lately; an artifact no host has used for a day goes at the next
/// start, and so does a temporary file a killed writer left.
#[tokio::test]
async fn artifacts_unused_for_a_day_leave_the_cache_and_used_ones_stay() {
    use sha2::{Digest, Sha256};
    let data = tempfile::tempdir().unwrap();
    let artifacts = data.path().join("artifacts");
    let (hello, echo) = (example("hello"), example("echo"));
    let artifact_of = |component: &Path| {
        let digest = hex(&Sha256::digest(std::fs::read(component).unwrap()));
        std::fs::read_dir(&artifacts)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(&digest)
            })
    };
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 60 * 60);
    let age = |path: &Path| {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(two_days_ago).unwrap();
    };
    // The log line of a start's collection.
    let collected = |host: &Host| {
        host.wait_for_line(Duration::from_secs(10), |line| {
            line.contains("unused compiled artifacts removed")
        })
        .unwrap_or_else(|| panic!("nothing collected:\n{}", host.log()))
    };
    let killed_writer = |name: &str| {
        let path = artifacts.join(name);
        std::fs::write(&path, "half an artifact").unwrap();
        age(&path);
        path
    };

    // A first start compiles both.
    let manifest = common::manifest(
        data.path(),
        &[
            ("hello", &hello, &["/hello"], &[]),
            ("echo", &echo, &["/echo"], &[]),
        ],
    );
    let host = Host::start_with(&manifest, data.path(), &[], &[]).unwrap();
    wait_for_state(&host, "hello", "compiled", Duration::from_secs(30)).await;
    wait_for_state(&host, "echo", "compiled", Duration::from_secs(30)).await;
    drop(host);
    for component in [&hello, &echo] {
        age(&artifact_of(component).expect("an artifact"));
    }
    let stale = killed_writer(".tmpKILLED1");

    // Two days later, a host that serves hello only: hello's artifact is
    // used (and so used lately), echo's and the temporary file go.
    let manifest = common::manifest(data.path(), &[("hello", &hello, &["/hello"], &[])]);
    let host = Host::start_with(&manifest, data.path(), &[], &[]).unwrap();
    let removed = collected(&host);
    assert!(removed.contains("files=2"), "{removed}");
    assert!(artifact_of(&hello).is_some());
    assert!(artifact_of(&echo).is_none());
    assert!(!stale.exists());
    assert_eq!(
        host.get("/hello").await,
        (200, "Hello, world!\n".to_owned())
    );
    drop(host);

    // Then a host that serves echo only: hello's artifact is unused, but a
    // host used it lately, so it stays (the temporary file shows that the
    // collection ran); echo compiles again.
    let stale = killed_writer(".tmpKILLED2");
    let manifest = common::manifest(data.path(), &[("echo", &echo, &["/echo"], &[])]);
    let host = Host::start_with(&manifest, data.path(), &[], &[]).unwrap();
    let removed = collected(&host);
    assert!(removed.contains("files=1"), "{removed}");
    assert!(!stale.exists());
    assert!(artifact_of(&hello).is_some());
    wait_for_state(&host, "echo", "compiled", Duration::from_secs(30)).await;
    assert!(artifact_of(&echo).is_some());
    assert_eq!(host.get("/echo").await.0, 200);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_admin_api_lists_functions_and_refuses_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::manifest(
        dir.path(),
        &[
            ("hello", &example("hello"), &["/hello", "/hi/..."], &[]),
            ("echo", &example("echo"), &["/echo"], &[]),
        ],
    );
    let host = Host::start(&manifest);
    let functions = host.functions().await;
    let names: Vec<&str> = functions
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello", "echo"]);
    assert_eq!(
        functions[0]["routes"],
        serde_json::json!(["/hello", "/hi/..."])
    );
    assert_eq!(
        functions[0]["idle_timeout_ms"], 60_000,
        "the host-wide default"
    );
    for f in &functions {
        let state = f["state"].as_str().unwrap();
        assert!(
            ["registered", "compiling", "compiled"].contains(&state),
            "{f}"
        );
    }

    let admin = format!("http://{}", host.admin);
    let response = http1()
        .post(format!("{admin}/v1/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let response = http1()
        .get(format!("{admin}/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // The admin API is not on the public port.
    assert_eq!(host.get("/v1/functions").await.0, 404);
}

#[tokio::test]
async fn instances_are_fresh_per_request_unless_the_function_opts_into_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let counter = common::guest("counter");
    let manifest = write(
        dir.path(),
        "shoal.toml",
        format!(
            "[[function]]\nname = \"fresh\"\ncomponent = {counter:?}\nroutes = [\"/fresh\"]\n\n\
             [[function]]\nname = \"reused\"\ncomponent = {counter:?}\nroutes = [\"/reused\"]\n\
             max_instance_reuse = 3\n"
        ),
    );
    let host = Host::start(&manifest);
    assert_eq!(host.function("fresh").await["max_instance_reuse"], 1);
    assert_eq!(host.function("reused").await["max_instance_reuse"], 3);

    // Sequential requests: a fresh instance each time, so nothing carries
    // over; a reused instance serves three, then is replaced. After its
    // first request, the fresh-instance function has its next instance
    // made before the next request comes: each is used once.
    assert_eq!(host.get("/fresh").await, (200, "1\n".to_owned()));
    for _ in 0..4 {
        wait_for(&host, "fresh", "idle_instances", 1, Duration::from_secs(5)).await;
        assert_eq!(host.get("/fresh").await, (200, "1\n".to_owned()));
    }
    // The client can read the whole answer just before the instance is
    // back in the pool: wait for it there before the next request.
    let mut counts = Vec::new();
    for _ in 0..7 {
        let count: u32 = host.get("/reused").await.1.trim().parse().unwrap();
        counts.push(count);
        let idle = usize::from(count < 3);
        wait_for(
            &host,
            "reused",
            "idle_instances",
            idle,
            Duration::from_secs(5),
        )
        .await;
    }
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1]);

    // An instance that trapped is never used again.
    assert_eq!(host.get("/reused?trap").await.0, 500);
    assert_eq!(host.get("/reused").await, (200, "1\n".to_owned()));
}

/// A fresh instance's store is dropped after its answer is written, in a
/// task of its own: the instance's place in the pool is given back only
/// then. With one place in all, requests sent back to back, on kept-alive
/// connections and from several clients at once, each still get an
/// instance of their own (the counter answers 1) and none is refused for
/// want of a slot.
#[tokio::test]
async fn back_to_back_requests_through_one_instance_slot_each_get_a_fresh_instance() {
    let dir = tempfile::tempdir().unwrap();
    let counter = common::guest("counter");
    let manifest = write(
        dir.path(),
        "shoal.toml",
        format!("[[function]]\nname = \"fresh\"\ncomponent = {counter:?}\nroutes = [\"/fresh\"]\n"),
    );
    let host = Host::start_with(&manifest, dir.path(), &["--max-instances", "1"], &[]).unwrap();
    let client = http1();
    let clients = (0..4).map(|_| {
        let (client, host) = (client.clone(), &host);
        async move {
            let mut answers = Vec::new();
            for _ in 0..25 {
                let response = client.get(host.url("/fresh")).send().await.unwrap();
                let status = response.status().as_u16();
                answers.push((status, response.text().await.unwrap()));
            }
            answers
        }
    });
    for answers in futures::future::join_all(clients).await {
        assert_eq!(answers, vec![(200, "1\n".to_owned()); 25]);
    }
}

/// Functions the memory test warms: enough that what the host holds for
/// them (a few KiB each) stands well above its other changes of RSS.
const MANY_FUNCTIONS: usize = 2_000;

#[tokio::test]
async fn once_every_function_has_scaled_to_zero_their_memory_goes_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hello = example("hello");
    let definitions: String = (0..MANY_FUNCTIONS)
        .map(|i| {
            format!(
                "[[function]]\nname = \"f{i}\"\ncomponent = {hello:?}\nroutes = [\"/f{i}\"]\n\
                 idle_timeout = \"3s\"\n"
            )
        })
        .collect();
    let manifest = write(dir.path(), "shoal.toml", definitions);
    // What is measured is the functions' own memory. Instances made ahead
    // (64 of them alive beside the requests' own) would touch more slots of
    // the instance pool, and a slot keeps its resident pages for the next
    // instance: about 3 MiB more here, before and after.
    let host = Host::start_with(&manifest, dir.path(), &["--ready-instances", "0"], &[]).unwrap();
    host.wait_compiled().await;
    let ready = host.memory_kib("VmRSS");

    // Every function warm at once: eight clients share them out.
    let client = http1();
    let clients = (0..8).map(|first| {
        let (client, host) = (client.clone(), &host);
        async move {
            for i in (first..MANY_FUNCTIONS).step_by(8) {
                let answer = client
                    .get(host.url(&format!("/f{i}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200, "/f{i}");
            }
        }
    });
    futures::future::join_all(clients).await;
    let warm = host.memory_kib("VmRSS");
    let grown = warm.saturating_sub(ready);
    assert!(
        grown > 4_096,
        "warming {MANY_FUNCTIONS} functions grew RSS by only {grown} KiB: too little to tell"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    while host.functions().await.iter().any(|f| f["state"] == "warm") {
        assert!(Instant::now() < deadline, "never all scaled to zero");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The allocator alone would give it back over about ten seconds.
    let scaled = Instant::now();
    let mut rss = host.memory_kib("VmRSS");
    while rss > ready + grown / 2 && scaled.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        rss = host.memory_kib("VmRSS");
    }
    println!("RSS {ready} KiB ready, {warm} KiB warm, {rss} KiB after scaling to zero");
    assert!(
        rss <= ready + grown / 2,
        "RSS {rss} KiB a second after scaling to zero: {ready} KiB ready, {warm} KiB warm"
    );
}

/// The host's `shoal_kept_code_bytes`.
async fn kept_code(host: &Host) -> f64 {
    host.metrics().await["shoal_kept_code_bytes"]
}

/// Whether each of `function`'s cold starts so far loaded its code
/// (`loaded_code=true`), in order.
fn cold_starts_loaded(host: &Host, function: &str) -> Vec<bool> {
    let field = format!("function={function} ");
    host.log()
        .lines()
        .filter(|l| l.contains("cold start") && l.contains(&field))
        .map(|l| {
            assert!(l.contains("loaded_code="), "{l}");
            l.contains("loaded_code=true")
        })
        .collect()
}

/// Sends one request to `/{name}` and waits until the function has scaled
/// to zero and its cold start is logged; returns what it answered.
async fn once_then_zero(host: &Host, name: &str) -> (u16, String) {
    let answer = host.get(&format!("/{name}")).await;
    let starts = host.function(name).await["cold_starts"].as_u64().unwrap();
    wait_for_state(host, name, "compiled", Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while (cold_starts_loaded(host, name).len() as u64) < starts {
        assert!(Instant::now() < deadline, "{name}: no cold start logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answer
}

/// A function at zero keeps its compiled code mapped (`--keep-code`): its
/// next cold start does not load it again, and still runs a fresh instance
/// (the counter answers 1: no memory or global of the instance before it).
/// With `--keep-code 0`, every cold start loads the code.
#[tokio::test]
async fn a_function_at_zero_keeps_its_code_mapped_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let counter = common::guest("counter");
    let manifest = common::manifest(
        dir.path(),
        &[(
            "count",
            &counter,
            &["/count"],
            &["idle_timeout = \"500ms\""],
        )],
    );
    let kept = Host::start_with(&manifest, &dir.path().join("kept"), &[], &[]).unwrap();
    let unkept = Host::start_with(
        &manifest,
        &dir.path().join("unkept"),
        &["--keep-code", "0"],
        &[],
    )
    .unwrap();
    for host in [&kept, &unkept] {
        host.wait_compiled().await;
        assert_eq!(kept_code(host).await, 0.0, "nothing has scaled to zero yet");
        for _ in 0..3 {
            assert_eq!(once_then_zero(host, "count").await, (200, "1\n".to_owned()));
        }
    }
    // Only the first cold start loaded the code; the others found it kept.
    assert_eq!(cold_starts_loaded(&kept, "count"), [true, false, false]);
    assert!(kept_code(&kept).await > 0.0);
    assert_eq!(cold_starts_loaded(&unkept, "count"), [true, true, true]);
    assert_eq!(kept_code(&unkept).await, 0.0);

    // Warm again (for 500 ms), its code is no longer counted as kept.
    assert_eq!(kept.get("/count").await, (200, "1\n".to_owned()));
    assert_eq!(kept_code(&kept).await, 0.0);
}

/// The code kept is bounded by `--keep-code`: past it, the code let go of
/// longest ago is unmapped first, and its function's next cold start loads
/// it again.
#[tokio::test]
async fn kept_code_beyond_the_budget_is_unmapped_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let idle: &[&str] = &["idle_timeout = \"100ms\""];
    let (counter, hello) = (common::guest("counter"), example("hello"));
    let manifest = common::manifest(
        dir.path(),
        &[
            ("count", &counter, &["/count"], idle),
            ("hello", &hello, &["/hello"], idle),
        ],
    );
    // First, each one's size, from a host that keeps both.
    let sizes = {
        let host = Host::start_with(&manifest, &dir.path().join("sizes"), &[], &[]).unwrap();
        host.wait_compiled().await;
        once_then_zero(&host, "count").await;
        let count = kept_code(&host).await;
        once_then_zero(&host, "hello").await;
        let both = kept_code(&host).await;
        assert!(count > 0.0 && both > count, "{count} then {both}");
        [count, both - count]
    };
    // Room for either, not for both.
    let budget = (sizes[0].max(sizes[1]) + sizes[0].min(sizes[1]) / 2.0) as u64;
    let host = Host::start_with(
        &manifest,
        &dir.path().join("bounded"),
        &["--keep-code", &budget.to_string()],
        &[],
    )
    .unwrap();
    host.wait_compiled().await;
    assert_eq!(once_then_zero(&host, "count").await.0, 200);
    assert_eq!(kept_code(&host).await, sizes[0]);
    assert_eq!(once_then_zero(&host, "hello").await.0, 200);
    assert_eq!(kept_code(&host).await, sizes[1], "the counter's code left");
    // The one kept is found again; the one that left is loaded again.
    assert_eq!(once_then_zero(&host, "hello").await.0, 200);
    assert_eq!(cold_starts_loaded(&host, "hello"), [true, false]);
    assert_eq!(
        once_then_zero(&host, "count").await,
        (200, "1\n".to_owned())
    );
    assert_eq!(cold_starts_loaded(&host, "count"), [true, true]);
    assert_eq!(kept_code(&host).await, sizes[0], "the hello's code left");
}

/// A function removed takes its kept code with it: nothing is left mapped
/// for a component no function uses.
#[tokio::test]
async fn a_removed_function_takes_its_kept_code_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let idle: &[&str] = &["idle_timeout = \"100ms\""];
    let (counter, hello) = (common::guest("counter"), example("hello"));
    let manifest = common::manifest(dir.path(), &[("count", &counter, &["/count"], idle)]);
    let host = Host::start_with(&manifest, dir.path(), &[], &[]).unwrap();
    host.wait_compiled().await;
    once_then_zero(&host, "count").await;
    assert!(kept_code(&host).await > 0.0);

    common::manifest(dir.path(), &[("hello", &hello, &["/hello"], idle)]);
    host.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while kept_code(&host).await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the removed function's code is still kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(host.get("/hello").await.0, 200);
}

/// Functions of one component share its code: one that scales to zero
/// while another stays warm leaves nothing to keep (the code is in use),
/// and its next cold start finds the code mapped.
#[tokio::test]
async fn code_still_used_by_a_warm_function_is_not_counted_as_kept() {
    let dir = tempfile::tempdir().unwrap();
    let counter = common::guest("counter");
    let manifest = common::manifest(
        dir.path(),
        &[
            ("warm", &counter, &["/warm"], &["min_instances = 1"]),
            ("idle", &counter, &["/idle"], &["idle_timeout = \"100ms\""]),
        ],
    );
    let host = Host::start_with(&manifest, dir.path(), &[], &[]).unwrap();
    host.wait_compiled().await;
    wait_for_state(&host, "warm", "warm", Duration::from_secs(10)).await;
    for _ in 0..2 {
        assert_eq!(once_then_zero(&host, "idle").await, (200, "1\n".to_owned()));
        assert_eq!(kept_code(&host).await, 0.0);
    }
    assert_eq!(cold_starts_loaded(&host, "idle"), [false, false]);
}

/// The host's `shoal_ready_instances`.
async fn ready_instances(host: &Host) -> f64 {
    host.metrics().await["shoal_ready_instances"]
}

/// Polls `/metrics` until `shoal_ready_instances` is `count`.
async fn wait_for_ready(host: &Host, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = ready_instances(host).await;
        if ready == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ready} instances ready, never {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Functions that each served a request, one after the other, in a host
/// of `--max-instances 16`: a quarter of that (4) may keep an instance
/// made ahead; each of the first four does.
async fn four_ready_of_five(settings: &[&str]) -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let counter = common::guest("counter");
    let slow = common::guest("slow");
    let names = ["f1", "f2", "f3", "f4", "f5"];
    let routes: Vec<[String; 1]> = names.iter().map(|n| [format!("/{n}")]).collect();
    let routes: Vec<[&str; 1]> = routes.iter().map(|[r]| [r.as_str()]).collect();
    let mut decls: Vec<common::Decl<'_>> = names
        .iter()
        .zip(&routes)
        .map(|(name, route)| (*name, counter.as_path(), &route[..], settings))
        .collect();
    decls.push(("slow", slow.as_path(), &["/slow"], &[]));
    let manifest = common::manifest(dir.path(), &decls);
    let host = Host::start_with(&manifest, dir.path(), &["--max-instances", "16"], &[]).unwrap();
    host.wait_compiled().await;
    for name in &names[..4] {
        assert_eq!(host.get(&format!("/{name}")).await, (200, "1\n".to_owned()));
        wait_for(&host, name, "idle_instances", 1, Duration::from_secs(10)).await;
    }
    assert_eq!(host.get("/f5").await, (200, "1\n".to_owned()));
    (dir, host)
}

/// Instances made ahead take slots of the pool beyond the instances
/// requests may hold: with four of them made, sixteen requests at once
/// (`--max-instances 16`) each still get an instance, and the four stay.
/// A fifth function finds no room for one more (the host holds a quarter
/// of `--max-instances` at most).
#[tokio::test]
async fn instances_made_ahead_never_take_a_slot_a_request_needs() {
    let (_dir, host) = four_ready_of_five(&[]).await;
    wait_for_ready(&host, 4.0).await;
    let client = http1();
    let requests = (0..16).map(|_| {
        let client = client.clone();
        let url = host.url("/slow?ms=300");
        async move {
            let response = client.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    });
    let answers = futures::future::join_all(requests).await;
    assert_eq!(answers, vec![(200, "slept 300 ms\n".to_owned()); 16]);
    assert_eq!(host.function("f5").await["idle_instances"], 0);
    for name in ["f1", "f2", "f3", "f4"] {
        assert_eq!(host.function(name).await["idle_instances"], 1, "{name}");
    }
}

/// An instance made ahead goes with its function when it scales to zero,
/// and its place and memory go back to the host: another function then
/// gets one.
#[tokio::test]
async fn instances_made_ahead_go_when_their_function_scales_to_zero() {
    let (_dir, host) = four_ready_of_five(&["idle_timeout = \"1s\""]).await;
    for name in ["f1", "f2", "f3", "f4", "f5"] {
        wait_for_state(&host, name, "compiled", Duration::from_secs(10)).await;
    }
    wait_for_ready(&host, 0.0).await;
    assert_eq!(host.metrics().await["shoal_memory_in_use_bytes"], 0.0);
    assert_eq!(host.get("/f5").await, (200, "1\n".to_owned()));
    wait_for(&host, "f5", "idle_instances", 1, Duration::from_secs(10)).await;
    assert_eq!(host.get("/f5").await, (200, "1\n".to_owned()));
}

/// `--ready-instances 0` makes every instance when its request comes; a
/// count that is not a number is refused at start.
#[tokio::test]
async fn no_instance_is_made_ahead_with_ready_instances_zero() {
    let dir = tempfile::tempdir().unwrap();
    let counter = common::guest("counter");
    let manifest = common::manifest(dir.path(), &[("f", &counter, &["/f"], &[])]);
    let host = Host::start_with(&manifest, dir.path(), &["--ready-instances", "0"], &[]).unwrap();
    for _ in 0..3 {
        assert_eq!(host.get("/f").await, (200, "1\n".to_owned()));
    }
    // Made ahead, an instance would be ready a few milliseconds after the
    // answer; watch for a while that none comes.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(host.function("f").await["idle_instances"], 0);
        assert_eq!(ready_instances(&host).await, 0.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let refused = Host::start_with(&manifest, dir.path(), &["--ready-instances", "some"], &[]);
    let error = refused.err().expect("--ready-instances some was accepted");
    assert!(error.contains("--ready-instances"), "{error}");
}

/// A guest may go on working after its whole answer is sent: HTTP/1 lets
/// go of a body of declared length once that much is sent, and the guest
/// still runs to its end (not stopped as if its client had gone away).
/// Its next instance is made once it has ended.
#[tokio::test]
async fn a_guest_that_works_on_after_its_answer_runs_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let after = common::guest("after-answer");
    let manifest = common::manifest(dir.path(), &[("after", &after, &["/after"], &[])]);
    let host = Host::start_with(&manifest, dir.path(), &[], &[]).unwrap();
    assert_eq!(
        host.get("/after?ms=300").await,
        (200, "answered\n".to_owned())
    );
    assert!(
        host.wait_for_log("finished 300 ms after the answer", Duration::from_secs(10)),
        "the guest was stopped after its answer: {}",
        host.log()
    );
    wait_for(&host, "after", "idle_instances", 1, Duration::from_secs(10)).await;
}

/// The instance after a failed one is made ahead too: a trap does not
/// leave the function's next request to instantiate its own.
#[tokio::test]
async fn an_instance_is_made_ahead_after_a_guest_traps() {
    let dir = tempfile::tempdir().unwrap();
    let counter = common::guest("counter");
    let manifest = common::manifest(dir.path(), &[("f", &counter, &["/f"], &[])]);
    let host = Host::start_with(&manifest, dir.path(), &[], &[]).unwrap();
    assert_eq!(host.get("/f?trap").await.0, 500);
    wait_for(&host, "f", "idle_instances", 1, Duration::from_secs(10)).await;
    assert_eq!(host.get("/f").await, (200, "1\n".to_owned()));
}

/// Start code (what a component runs as it is instantiated, before any
/// request) is guest code under its function's limits, whether it runs
/// for a request or for an instance made ahead: code that loops is stopped
/// at the timeout, code that traps fails the request, and neither holds up
/// the other functions or keeps the host busy afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn start_code_that_loops_or_traps_fails_its_own_requests_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let start = common::guest("start-code");
    let manifest = common::manifest(
        dir.path(),
        &[
            ("fine", &start, &["/fine"], &[]),
            (
                "looping",
                &start,
                &["/loop"],
                &["timeout = \"500ms\"", "env = { START = \"loop\" }"],
            ),
            (
                "trapping",
                &start,
                &["/trap"],
                &["env = { START = \"trap\" }"],
            ),
            ("hello", &example("hello"), &["/hello"], &[]),
        ],
    );
    let host = Host::start_with(&manifest, dir.path(), &[], &[]).unwrap();
    // Each instance runs its start code once: the first request's as it
    // is made, the next ones' ahead of them.
    for _ in 0..3 {
        assert_eq!(
            host.get("/fine").await,
            (200, "start code ran 1 time(s)\n".to_owned())
        );
        wait_for(&host, "fine", "idle_instances", 1, Duration::from_secs(10)).await;
    }
    for _ in 0..3 {
        let (status, body) = host.get("/loop").await;
        assert_eq!(status, 504, "{body}");
        let (status, body) = host.get("/trap").await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(
            host.get("/hello").await,
            (200, "Hello, world!\n".to_owned())
        );
    }
    assert!(
        host.wait_for_log("start code trapped", Duration::from_secs(10)),
        "{}",
        host.log()
    );
    // No instance of theirs is kept, and once the last one made ahead has
    // met the timeout, nothing of the host spins.
    for name in ["looping", "trapping"] {
        assert_eq!(host.function(name).await["idle_instances"], 0, "{name}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = host.cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = host.cpu_time() - busy;
    assert!(
        busy < Duration::from_millis(500),
        "the host used {busy:?} of CPU in 1 s at rest"
    );
    assert_eq!(
        host.get("/fine").await,
        (200, "start code ran 1 time(s)\n".to_owned())
    );
}
