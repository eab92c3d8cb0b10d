//! Functions uploaded to a running host: revisions that survive restarts
//! and crashes, traffic split by weight and by header, rollback, deletion,
//! and an admin API that nobody without the token can change.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{AdminApi, Host, TOKEN, example, guest, http1, token_file, write};
use futures::StreamExt as _;
use reqwest::Method;

/// A host serving the manifest's `hello` at `/hello`, with the write API
/// on, and its data dir; `args` go to `host run`.
fn deploy_host(args: &[&str]) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let host = start_in(dir.path(), args);
    (host, dir)
}

/// Starts (or restarts) the deploy host whose files are in `dir`.
fn start_in(dir: &Path, args: &[&str]) -> Host {
    start_serving(dir, &example("hello"), args)
}

/// The deploy host of `dir`, its manifest's `hello` served from `hello`.
fn start_serving(dir: &Path, hello: &Path, args: &[&str]) -> Host {
    let manifest = common::manifest(dir, &[("hello", hello, &["/hello"], &[])]);
    let token = token_file(dir);
    let mut all = vec!["--admin-token-file", token.to_str().unwrap()];
    all.extend_from_slice(args);
    Host::start_with(&manifest, &dir.join("data"), &all, &[]).unwrap()
}

fn admin(host: &Host) -> AdminApi<'_> {
    AdminApi {
        host,
        token: Some(TOKEN),
    }
}

/// `GET path`: the status, the revision header and the body.
async fn served(host: &Host, path: &str) -> (u16, Option<String>, String) {
    let response = http1().get(host.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let revision = response
        .headers()
        .get("x-shoal-revision")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, revision, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_component_is_deployed_as_a_revision_and_served() {
    let (host, _dir) = deploy_host(&[]);
    let api = admin(&host);
    let (status, uploaded) = api.upload(std::fs::read(guest("counter")).unwrap()).await;
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!(uploaded["stored"], "new");
    let digest = uploaded["component"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    // The same bytes again are not stored twice.
    let (status, again) = api.upload(std::fs::read(guest("counter")).unwrap()).await;
    assert_eq!((status, again["stored"].as_str()), (200, Some("existing")));

    let definition = format!("component = {digest:?}\nroutes = [\"/up\"]\nenv = {{ A = \"1\" }}\n");
    let (status, deployed) = api.deploy("up", &definition).await;
    assert_eq!(status, 201, "{deployed}");
    assert_eq!(deployed["revision"], "up-00001");
    assert_eq!(deployed["traffic"]["split"]["up-00001"], 100);

    assert_eq!(
        served(&host, "/up").await,
        (200, Some("up-00001".to_owned()), "1\n".to_owned())
    );
    // The manifest's function is untouched, and has no revision header.
    assert_eq!(served(&host, "/hello").await.1, None);
    let up = host.function("up").await;
    assert_eq!(
        (up["source"].as_str(), up["revision"].as_str()),
        (Some("deployed"), Some("up-00001"))
    );
    assert_eq!(host.function("hello").await["source"], "manifest");
    // The revision is in the access log and in the metrics.
    assert!(
        host.wait_for_log("revision=up-00001", Duration::from_secs(5)),
        "{}",
        host.log()
    );
    let metrics = host.metrics().await;
    let key = r#"shoal_requests_total{class="2xx",function="up",revision="up-00001"}"#;
    assert_eq!(metrics[key], 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_upload_or_definition_is_refused_and_the_previous_revision_serves() {
    let (host, dir) = deploy_host(&["--max-upload", "1MiB"]);
    let api = admin(&host);
    assert_eq!(
        api.deploy_component("up", &guest("counter"), &["/up"])
            .await,
        "up-00001"
    );
    let blobs = || {
        std::fs::read_dir(dir.path().join("data/deploy/blobs"))
            .unwrap()
            .count()
    };
    assert_eq!(blobs(), 1);

    let core_module = wat::parse_str("(module)").unwrap();
    let no_handler = wat::parse_str("(component)").unwrap();
    let missing_import = wat::parse_str(
        r#"(component (import "shoal:test/missing" (instance (export "f" (func)))))"#,
    )
    .unwrap();
    let uploads: [(&str, Vec<u8>, u16, &str); 4] = [
        (
            "text",
            b"not wasm at all".to_vec(),
            400,
            "not a WebAssembly component",
        ),
        (
            "core module",
            core_module,
            400,
            "core WebAssembly module, not a component",
        ),
        ("no handler", no_handler, 400, "not a wasi:http handler"),
        (
            "missing import",
            missing_import,
            400,
            "imports cannot be satisfied",
        ),
    ];
    for (what, bytes, status, says) in uploads {
        let (got, answer) = api.upload(bytes).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{what}: {answer}"
        );
    }
    // Declared larger than --max-upload: refused before it is read (a raw
    // socket sends the head and a little of the body, and reads the answer).
    let too_large = {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(host.admin).unwrap();
        write!(
            socket,
            "POST /v1/components HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {}\r\n\r\n",
            2 << 20
        )
        .unwrap();
        socket.write_all(&[0; 1024]).unwrap();
        let mut answer = vec![0; 4096];
        let n = socket.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    assert!(too_large.starts_with("HTTP/1.1 413"), "{too_large}");
    assert!(
        too_large.contains("larger than 1048576 bytes"),
        "{too_large}"
    );
    assert_eq!(blobs(), 1, "a refused upload was kept");

    let digest = host.function("up").await["component"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown = format!("sha256:{}", "0".repeat(64));
    let definitions: [(&str, String, u16, &str); 5] = [
        (
            "a typo",
            format!("component = {digest:?}\nrutes = [\"/x\"]\n"),
            400,
            "unknown field `rutes`",
        ),
        (
            "no component",
            format!("component = {unknown:?}\nroutes = [\"/x\"]\n"),
            400,
            "was uploaded",
        ),
        (
            "a manifest route",
            format!("component = {digest:?}\nroutes = [\"/hello\"]\n"),
            409,
            "already taken by function `hello`",
        ),
        (
            "a bad limit",
            format!("component = {digest:?}\nroutes = [\"/x\"]\nmemory = \"1KiB\"\n"),
            400,
            "invalid memory",
        ),
        (
            "another name",
            format!("name = \"other\"\ncomponent = {digest:?}\nroutes = [\"/x\"]\n"),
            400,
            "not `up`",
        ),
    ];
    for (what, definition, status, says) in definitions {
        let (got, answer) = api.deploy("up", &definition).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{what}: {answer}"
        );
    }
    // A manifest function is not the admin API's to change.
    let (got, answer) = api
        .deploy(
            "hello",
            &format!("component = {digest:?}\nroutes = [\"/x\"]\n"),
        )
        .await;
    assert_eq!(got, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("declared in the manifest")
    );
    let (got, _) = api
        .call(Method::DELETE, "/v1/functions/hello", Vec::new())
        .await;
    assert_eq!(got, 409);

    assert_eq!(
        served(&host, "/up").await,
        (200, Some("up-00001".to_owned()), "1\n".to_owned())
    );
    let (_, revisions) = api.revisions("up").await;
    assert_eq!(revisions["revisions"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_the_write_api_is_off_and_a_wrong_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::manifest(
        dir.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    let component = std::fs::read(guest("counter")).unwrap();

    // No token configured: reads are open, writes are off.
    let open = Host::start_with(&manifest, &dir.path().join("a"), &[], &[]).unwrap();
    let api = AdminApi {
        host: &open,
        token: None,
    };
    let (status, answer) = api.upload(component.clone()).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("--admin-token-file")
    );
    assert_eq!(
        api.call(Method::GET, "/v1/functions", Vec::new()).await.0,
        200
    );
    drop(open);

    // A token configured: every /v1/ call needs it, /metrics does not.
    let token = token_file(dir.path());
    let args = ["--admin-token-file", token.to_str().unwrap()];
    let host = Host::start_with(&manifest, &dir.path().join("b"), &args, &[]).unwrap();
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let api = AdminApi { host: &host, token };
        assert_eq!(api.upload(component.clone()).await.0, 401, "{token:?}");
        assert_eq!(
            api.call(Method::GET, "/v1/functions", Vec::new()).await.0,
            401
        );
    }
    let metrics = http1()
        .get(format!("http://{}/metrics", host.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        !std::fs::read_dir(dir.path().join("b/deploy/blobs"))
            .unwrap()
            .any(|_| true),
        "something was stored"
    );
    assert!(!host.log().contains(TOKEN), "the token was logged");
    let api = admin(&host);
    assert_eq!(api.upload(component).await.0, 201);

    // An admin listener beyond loopback without a token refuses to start.
    let output = std::process::Command::new(common::host_binary())
        .arg("run")
        .arg(&manifest)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("beyond loopback"), "{stderr}");
    // A token too short is refused too.
    let short = write(dir.path(), "short", "abc");
    let refused = Host::start_with(
        &manifest,
        &dir.path().join("d"),
        &["--admin-token-file", short.to_str().unwrap()],
        &[],
    );
    assert!(refused.err().unwrap().contains("at least 16 characters"));
}

/// The revision that answered each of `n` requests to `path` with `headers`.
async fn revisions_serving(
    host: &Host,
    path: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let client = http1();
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let mut request = client.get(host.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let revision = response.headers()["x-shoal-revision"]
            .to_str()
            .unwrap()
            .to_owned();
        response.bytes().await.unwrap();
        seen.push(revision);
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_splits_by_weight_a_header_pins_and_a_rollback_goes_back() {
    let (host, _dir) = deploy_host(&[]);
    let api = admin(&host);
    let one = api.deploy_component("f", &example("hello"), &["/f"]).await;
    let two = api.deploy_component("f", &guest("counter"), &["/f"]).await;
    assert_eq!((one.as_str(), two.as_str()), ("f-00001", "f-00002"));
    // A deploy takes all the traffic.
    assert!(
        revisions_serving(&host, "/f", 20, &[])
            .await
            .iter()
            .all(|r| *r == two)
    );

    let (status, answer) = api
        .traffic(
            "f",
            serde_json::json!({
                "split": { one.as_str(): 90, two.as_str(): 10 },
                "pins": [{ "header": "x-canary", "value": "true", "revision": two.as_str() }],
            }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let seen = revisions_serving(&host, "/f", 2000, &[]).await;
    let share = seen.iter().filter(|r| **r == two).count() as f64 / 20.0;
    assert!(
        (7.0..=13.0).contains(&share),
        "f-00002 served {share}% of 2,000"
    );
    let pinned = revisions_serving(&host, "/f", 50, &[("x-canary", "true")]).await;
    assert!(pinned.iter().all(|r| *r == two), "{pinned:?}");
    // Each revision has series of its own.
    let metrics = host.metrics().await;
    let count = |revision: &str| {
        metrics
            [&format!(r#"shoal_requests_total{{class="2xx",function="f",revision="{revision}"}}"#)]
    };
    // 20 before the split, 2,000 split, 50 pinned.
    assert_eq!(count(&one) + count(&two), 2070.0);

    // Bad splits change nothing.
    for bad in [
        serde_json::json!({ "split": { one.as_str(): 60, two.as_str(): 60 } }),
        serde_json::json!({ "split": { "f-00009": 100 } }),
        serde_json::json!({ "split": 100 }),
    ] {
        let (status, answer) = api.traffic("f", bad).await;
        assert!(status == 400 || status == 404, "{status}: {answer}");
    }
    let (_, revisions) = api.revisions("f").await;
    assert_eq!(revisions["traffic"]["split"][&one], 90);

    // Rollback: to the one before the main one, then to a named one.
    let (status, answer) = api
        .call(Method::POST, "/v1/functions/f/rollback", Vec::new())
        .await;
    assert_eq!(status, 409, "nothing before f-00001: {answer}");
    let body = serde_json::json!({ "revision": two.as_str() }).to_string();
    let (status, answer) = api
        .call(Method::POST, "/v1/functions/f/rollback", body)
        .await;
    assert_eq!(
        (status, answer["revision"].as_str()),
        (200, Some(two.as_str()))
    );
    let (status, answer) = api
        .call(Method::POST, "/v1/functions/f/rollback", Vec::new())
        .await;
    assert_eq!(
        (status, answer["revision"].as_str()),
        (200, Some(one.as_str()))
    );
    assert!(
        revisions_serving(&host, "/f", 20, &[])
            .await
            .iter()
            .all(|r| *r == one)
    );
    // The revision that no longer serves has no series left; the one that
    // serves keeps its own.
    let metrics = host.metrics().await;
    let has_series = |revision: &str| {
        let label = format!("revision=\"{revision}\"");
        metrics
            .keys()
            .any(|k| k.contains("function=\"f\"") && k.contains(&label))
    };
    assert!(!has_series(&two), "{metrics:?}");
    assert!(has_series(&one), "{metrics:?}");

    // Deleted: its route answers 404, and it is gone from the admin API.
    let (status, _) = api
        .call(Method::DELETE, "/v1/functions/f", Vec::new())
        .await;
    assert_eq!(status, 200);
    assert_eq!(served(&host, "/f").await.0, 404);
    assert_eq!(api.revisions("f").await.0, 404);
    assert_eq!(
        api.call(Method::DELETE, "/v1/functions/f", Vec::new())
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_restores_the_functions_revisions_and_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = start_in(dir.path(), &[]);
    let api = admin(&host);
    let one = api.deploy_component("f", &example("hello"), &["/f"]).await;
    let two = api.deploy_component("f", &guest("counter"), &["/f"]).await;
    api.traffic(
        "f",
        serde_json::json!({
            "split": { one.as_str(): 100 },
            "pins": [{ "header": "x-canary", "value": "true", "revision": two.as_str() }],
        }),
    )
    .await;
    api.deploy_component("g", &guest("counter"), &["/g"]).await;
    let (_, before) = api.revisions("f").await;
    host.signal("TERM");
    assert!(host.wait_exit(Duration::from_secs(10)).success());

    let host = start_in(dir.path(), &[]);
    let api = admin(&host);
    assert_eq!(api.revisions("f").await.1, before);
    assert_eq!(
        served(&host, "/f").await,
        (200, Some(one.clone()), "Hello, world!\n".to_owned())
    );
    let pinned = revisions_serving(&host, "/f", 5, &[("x-canary", "true")]).await;
    assert!(pinned.iter().all(|r| *r == two));
    assert_eq!(served(&host, "/g").await.2, "1\n");
    // And the next revision goes on from where the numbers were.
    assert_eq!(
        api.deploy_component("f", &example("hello"), &["/f"]).await,
        "f-00003"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_written_whole_by_an_earlier_host_is_served_and_moved_to_a_file_per_function() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = start_in(dir.path(), &[]);
    let api = admin(&host);
    api.deploy_component("f", &example("hello"), &["/f"]).await;
    api.deploy_component("g", &guest("counter"), &["/g"]).await;
    let (_, before) = api.revisions("f").await;
    host.signal("TERM");
    assert!(host.wait_exit(Duration::from_secs(10)).success());

    // The state as hosts before wrote it: one file, every function in it.
    let deploy = dir.path().join("data/deploy");
    let mut functions = serde_json::Map::new();
    for name in ["f", "g"] {
        let file = deploy.join(format!("functions/{name}.json"));
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        functions.insert(name.to_owned(), file["function"].clone());
    }
    std::fs::remove_dir_all(deploy.join("functions")).unwrap();
    let whole = serde_json::json!({ "format": 1, "functions": functions });
    std::fs::write(deploy.join("state.json"), whole.to_string()).unwrap();

    let mut host = start_in(dir.path(), &[]);
    let api = admin(&host);
    assert_eq!(api.revisions("f").await.1, before);
    assert_eq!(served(&host, "/f").await.2, "Hello, world!\n");
    assert_eq!(served(&host, "/g").await.2, "1\n");
    assert!(!deploy.join("state.json").exists());
    assert!(deploy.join("functions/g.json").exists());
    // Changes go on from there, and survive a restart.
    assert_eq!(
        api.deploy_component("f", &guest("counter"), &["/f"]).await,
        "f-00002"
    );
    host.signal("TERM");
    assert!(host.wait_exit(Duration::from_secs(10)).success());
    let host = start_in(dir.path(), &[]);
    assert_eq!(served(&host, "/f").await.1.as_deref(), Some("f-00002"));
    assert_eq!(served(&host, "/g").await.2, "1\n");
}

/// A second host on the data dir of one that owns its deployed state
/// serves what was deployed, refuses changes, and leaves the owner's work
/// under way alone: an upload in the middle as it starts still lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_host_on_the_data_dir_refuses_changes_and_leaves_the_owners_uploads_alone() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let owner = start_in(dir.path(), &[]);
    let api = admin(&owner);
    let one = api.deploy_component("f", &example("hello"), &["/f"]).await;

    // An upload to the owner, stopped in the middle.
    let component = std::fs::read(guest("counter")).unwrap();
    let (first, rest) = component.split_at(component.len() / 2);
    let mut upload = tokio::net::TcpStream::connect(owner.admin.to_string())
        .await
        .unwrap();
    let head = format!(
        "POST /v1/components HTTP/1.1\r\nhost: shoal\r\nauthorization: Bearer {TOKEN}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        component.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    upload.write_all(first).await.unwrap();
    let blobs = dir.path().join("data/deploy/blobs");
    let partial = || {
        std::fs::read_dir(&blobs)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with('.'))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !partial() {
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A second host on the same data dir, meanwhile.
    let second = start_in(dir.path(), &[]);
    assert!(
        second.wait_for_log(
            "another host owns the deployed state",
            Duration::from_secs(5)
        ),
        "{}",
        second.log()
    );
    assert_eq!(
        served(&second, "/f").await,
        (200, Some(one.clone()), "Hello, world!\n".to_owned())
    );
    let (status, answer) = admin(&second)
        .deploy("f", "component = \"sha256:00\"\nroutes = [\"/f\"]\n")
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(partial(), "the owner's upload under way was removed");

    // The owner's upload goes on and lands, and deploys.
    upload.write_all(rest).await.unwrap();
    let mut answer = String::new();
    upload.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(
        api.deploy_component("f", &guest("counter"), &["/f"]).await,
        "f-00002"
    );
    assert_eq!(served(&owner, "/f").await.2, "1\n");
}

/// A second host on the data dir follows what the owner deploys, changes
/// and deletes, refusing changes of its own; once the owner is gone, it
/// takes the deployed state over and changes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_host_follows_the_owners_changes_and_takes_over_when_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let mut owner = start_in(dir.path(), &[]);
    let second = start_in(dir.path(), &[]);
    let api = admin(&owner);
    // Until the second host answers `path` with `status`, from `revision`,
    // with a body that starts with `body`.
    let follows = async |path: &str, status: u16, revision: Option<&str>, body: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = served(&second, path).await;
            if answer.0 == status && answer.1.as_deref() == revision && answer.2.starts_with(body) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {answer:?}, not {status} from {revision:?}:\n{}",
                second.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let hello = "Hello, world!\n";

    let one = api.deploy_component("f", &example("hello"), &["/f"]).await;
    follows("/f", 200, Some(&one), hello).await;
    let two = api.deploy_component("f", &guest("counter"), &["/f"]).await;
    follows("/f", 200, Some(&two), "1\n").await;
    api.deploy_component("g", &example("hello"), &["/g"]).await;
    follows("/g", 200, Some("g-00001"), hello).await;
    let (status, _) = api
        .call(Method::DELETE, "/v1/functions/g", Vec::new())
        .await;
    assert_eq!(status, 200);
    follows("/g", 404, None, "404 Not Found").await;
    let (status, answer) = admin(&second)
        .deploy("f", "component = \"sha256:00\"\nroutes = [\"/f\"]\n")
        .await;
    assert_eq!(status, 409, "{answer}");

    // The owner goes; the second host takes over.
    owner.signal("KILL");
    owner.wait_exit(Duration::from_secs(10));
    assert!(
        second.wait_for_log("this one owns it now", Duration::from_secs(10)),
        "{}",
        second.log()
    );
    let api = admin(&second);
    assert_eq!(
        api.deploy_component("f", &example("hello"), &["/f"]).await,
        "f-00003"
    );
    assert_eq!(
        served(&second, "/f").await,
        (200, Some("f-00003".to_owned()), hello.to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_leaves_the_other_functions_as_they_were_even_if_their_files_changed() {
    // The manifest's `hello` is served from a copy the test then replaces
    // (no --watch, no reload): a deploy of another function must not
    // reread that file and swap in what is there now.
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("hello.wasm");
    std::fs::copy(example("hello"), &component).unwrap();
    let host = start_serving(dir.path(), &component, &[]);
    let digest = host.function("hello").await["component"].clone();
    assert_eq!(served(&host, "/hello").await.2, "Hello, world!\n");

    std::fs::copy(guest("counter"), &component).unwrap();
    let api = admin(&host);
    api.deploy_component("other", &guest("counter"), &["/other"])
        .await;
    assert_eq!(served(&host, "/other").await.2, "1\n");
    assert_eq!(host.function("hello").await["component"], digest);
    assert_eq!(served(&host, "/hello").await.2, "Hello, world!\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_does_not_read_the_components_of_revisions_already_serving() {
    let (host, dir) = deploy_host(&[]);
    let api = admin(&host);
    api.deploy_component("a", &guest("counter"), &["/a"]).await;
    // Its stored component is spoiled on disk: a deploy of another function
    // that read it again would fail to compile it.
    let digest = host.function("a").await["component"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let blob = dir.path().join(format!("data/deploy/blobs/{digest}.wasm"));
    assert!(blob.is_file(), "{}", blob.display());
    std::fs::write(&blob, b"not a component any more").unwrap();

    api.deploy_component("b", &example("hello"), &["/b"]).await;
    assert_eq!(served(&host, "/b").await.2, "Hello, world!\n");
    assert_eq!(served(&host, "/a").await.2, "1\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_during_an_upload_restarts_serving_the_previous_revision() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_in(dir.path(), &[]);
    let one = admin(&host)
        .deploy_component("f", &guest("counter"), &["/f"])
        .await;

    // A slow upload: half of a component, then a pause in which the host
    // is killed.
    let bytes = std::fs::read(example("hello")).unwrap();
    let half = bytes[..bytes.len() / 2].to_vec();
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(half)]).chain(
        futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Vec::new())
        }),
    );
    let upload = tokio::spawn(
        http1()
            .post(format!("http://{}/v1/components", host.admin))
            .bearer_auth(TOKEN)
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    let partial = dir.path().join("data/deploy/blobs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_dir(&partial).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".upload-")
    }) {
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    host.signal("KILL");
    drop(host);
    assert!(upload.await.unwrap().is_err());

    let host = start_in(dir.path(), &[]);
    assert_eq!(
        served(&host, "/f").await,
        (200, Some(one), "1\n".to_owned())
    );
    let left: Vec<String> = std::fs::read_dir(&partial)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|name| !name.starts_with(".upload-")),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_during_traffic_changes_restarts_into_a_state_it_acknowledged_or_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_in(dir.path(), &[]);
    let one = admin(&host)
        .deploy_component("f", &example("hello"), &["/f"])
        .await;
    let two = admin(&host)
        .deploy_component("f", &guest("counter"), &["/f"])
        .await;
    let mut host = Some(host);
    // The last deploy took all the traffic: f-00001 has none.
    let mut acknowledged = 0u8;
    for round in 0..12u8 {
        let running = host.take().unwrap();
        let percent = (round * 8 + 3) % 100;
        let split =
            serde_json::json!({ "split": { one.as_str(): percent, two.as_str(): 100 - percent } });
        // Killed at a moment that varies from before the call is read to
        // after it is answered.
        let api = admin(&running);
        let call = api.traffic("f", split);
        let kill_after = Duration::from_millis(u64::from(round % 6) * 2);
        let answered = tokio::select! {
            (status, _) = call => Some(status),
            () = tokio::time::sleep(kill_after) => None,
        };
        running.signal("KILL");
        drop(running);
        if answered == Some(200) {
            acknowledged = percent;
        }
        let restarted = start_in(dir.path(), &[]);
        let (status, revisions) = admin(&restarted).revisions("f").await;
        assert_eq!(status, 200);
        let now = revisions["traffic"]["split"][&one].as_u64().unwrap_or(0) as u8;
        assert!(
            now == acknowledged || now == percent,
            "round {round}: restored {now}%, acknowledged {acknowledged}%, sent {percent}%"
        );
        acknowledged = now;
        host = Some(restarted);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_deploys_of_one_function_end_in_one_consistent_state() {
    let (host, _dir) = deploy_host(&[]);
    let api = admin(&host);
    let components = [example("hello"), guest("counter")];
    let mut digests = Vec::new();
    for component in &components {
        let (_, uploaded) = api.upload(std::fs::read(component).unwrap()).await;
        digests.push(uploaded["component"].as_str().unwrap().to_owned());
    }
    let api = &api;
    let deploys = (0..16).map(|n| {
        let definition = format!("component = {:?}\nroutes = [\"/f\"]\n", digests[n % 2]);
        async move { api.deploy("f", &definition).await }
    });
    let answers = futures::future::join_all(deploys).await;
    let mut names: Vec<String> = answers
        .iter()
        .map(|(status, answer)| {
            assert_eq!(*status, 201, "{answer}");
            answer["revision"].as_str().unwrap().to_owned()
        })
        .collect();
    names.sort();
    let expected: Vec<String> = (1..=16).map(|n| format!("f-{n:05}")).collect();
    assert_eq!(names, expected, "each deploy got its own revision");
    let (_, revisions) = api.revisions("f").await;
    let split = revisions["traffic"]["split"].as_object().unwrap();
    assert_eq!(split.len(), 1, "{split:?}");
    let (serving, _) = split.iter().next().unwrap();
    // What answers is the revision the state says.
    let (status, revision, body) = served(&host, "/f").await;
    assert_eq!((status, revision.as_deref()), (200, Some(serving.as_str())));
    let record = revisions["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"] == serving.as_str())
        .unwrap();
    let expected_body = if record["component"] == digests[0].as_str() {
        "Hello, world!\n"
    } else {
        "1\n"
    };
    assert_eq!(body, expected_body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_under_load_fails_no_request() {
    let (host, _dir) = deploy_host(&[]);
    let api = admin(&host);
    api.deploy_component("f", &example("hello"), &["/f"]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (host.url("/f"), stop.clone());
            tokio::spawn(async move {
                let client = http1();
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = match client.get(&url).send().await {
                        Ok(response) => (
                            response.status().as_u16(),
                            response.text().await.unwrap_or_default(),
                        ),
                        Err(error) => (0, error.to_string()),
                    };
                    answers.push(answer);
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.deploy_component("f", &guest("counter"), &["/f"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for load in loads {
        answers.extend(load.await.unwrap());
    }
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(answers.iter().any(|(_, body)| body == "Hello, world!\n"));
    assert_eq!(answers.last().unwrap().1, "1\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn old_revisions_without_traffic_are_pruned_with_their_components() {
    let (host, dir) = deploy_host(&["--keep-revisions", "2"]);
    let api = admin(&host);
    let blobs = || {
        std::fs::read_dir(dir.path().join("data/deploy/blobs"))
            .unwrap()
            .count()
    };
    // `g` uses the component of `f`'s first revision too.
    api.deploy_component("g", &example("hello"), &["/g"]).await;
    let components = [
        example("hello"),
        guest("counter"),
        example("echo"),
        guest("slow"),
    ];
    // Every revision kept keeps its component: hello; hello and counter;
    // then (hello pruned from `f`, but `g`'s) hello, counter and echo;
    // hello, echo and slow.
    for (component, stored) in components.iter().zip([1, 2, 3, 3]) {
        api.deploy_component("f", component, &["/f"]).await;
        assert_eq!(blobs(), stored, "after {}", component.display());
    }
    let (_, revisions) = api.revisions("f").await;
    let names: Vec<&str> = revisions["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f-00003", "f-00004"]);
    // hello (still `g`'s), echo and slow.
    assert_eq!(blobs(), 3, "the pruned revisions' components stayed");
    let (status, _) = api
        .call(Method::DELETE, "/v1/functions/g", Vec::new())
        .await;
    assert_eq!(status, 200);
    assert_eq!(blobs(), 2, "the deleted function's component stayed");
}
