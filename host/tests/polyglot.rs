//! Components built by each language's standard toolchain run unchanged:
//! componentize-js, componentize-py, wit-bindgen C and C++, and Go through
//! the preview1 adapter. They import different parts of WASI 0.2 at
//! different minor versions, which the host must all satisfy.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use common::{Backend, Host, h2c, http1, manifest, repo};

const LANGS: [&str; 5] = ["js", "py", "c", "cpp", "go"];

/// The languages of the `api-<lang>` examples.
const API_LANGS: [&str; 4] = ["js", "py", "c", "go"];

/// Installs the toolchains (once per machine) and builds every example, once
/// per test process; returns the folder of the components.
fn build_polyglot() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(repo().join("scripts/build-polyglot"))
            .status()
            .expect("cannot run scripts/build-polyglot");
        assert!(status.success(), "scripts/build-polyglot failed");
        repo().join("target/polyglot")
    })
}

#[tokio::test]
async fn hello_from_every_toolchain_is_served() {
    let built = build_polyglot();
    let dir = tempfile::tempdir().unwrap();
    let components: Vec<(String, PathBuf, String)> = LANGS
        .iter()
        .map(|lang| {
            let component = built.join(format!("hello-{lang}.wasm"));
            (format!("hello-{lang}"), component, format!("/{lang}/..."))
        })
        .collect();
    let routes: Vec<[&str; 1]> = components.iter().map(|(_, _, r)| [r.as_str()]).collect();
    let decls: Vec<common::Decl<'_>> = components
        .iter()
        .zip(&routes)
        .map(|((name, component, _), routes)| {
            (name.as_str(), component.as_path(), &routes[..], &[][..])
        })
        .collect();
    let host = Host::start(&manifest(dir.path(), &decls));

    for (client, protocol) in [(http1(), "h1"), (h2c(), "h2c")] {
        for lang in LANGS {
            let path = format!("/{lang}/{protocol}?q=1");
            let response = client.get(host.url(&path)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{lang} over {protocol}");
            assert_eq!(response.headers()["content-type"], "text/plain");
            assert_eq!(
                response.text().await.unwrap(),
                format!("hello from {lang} {path}")
            );
            let logged = format!("hello-{lang} handled {path}");
            let line = host.wait_for_line(Duration::from_secs(5), |l| l.contains(&logged));
            let line = line.unwrap_or_else(|| panic!("no {logged:?} in:\n{}", host.log()));
            assert!(line.contains(&format!("function=hello-{lang}")), "{line}");
        }
    }
}

/// The `api-<lang>` examples implement one contract (see the header of
/// examples/api-js/api.js): every language gets the same requests and must
/// give the same answers, and log one line per request.
#[tokio::test(flavor = "multi_thread")]
async fn every_language_example_answers_the_api_contract() {
    let built = build_polyglot();
    let backend = Backend::start(r#"{"id": 1, "name": "Ada"}"#, Duration::ZERO).await;
    // Up, but not in the allowlist: the host refuses calls to it.
    let unlisted = Backend::start("{}", Duration::ZERO).await;

    // Each example twice: `api-<lang>` calls the backend, and
    // `api-<lang>-unlisted` the unlisted one.
    let allowed = format!("allowed_outbound_hosts = [\"http://{}\"]", backend.addr);
    let env = |to: &Backend| format!("env = {{ BACKEND_URL = {:?} }}", to.url("/users/1"));
    let (to_backend, to_unlisted) = (env(&backend), env(&unlisted));
    let mut functions = Vec::new();
    for lang in API_LANGS {
        let component = built.join(format!("api-{lang}.wasm"));
        for (suffix, env) in [("", &to_backend), ("-unlisted", &to_unlisted)] {
            let name = format!("api-{lang}{suffix}");
            let route = format!("/{name}/...");
            functions.push((name, component.clone(), route, [env.as_str(), &allowed]));
        }
    }
    let routes: Vec<[&str; 1]> = functions.iter().map(|(.., r, _)| [r.as_str()]).collect();
    let decls: Vec<common::Decl<'_>> = functions
        .iter()
        .zip(&routes)
        .map(|((name, component, _, settings), routes)| {
            (
                name.as_str(),
                component.as_path(),
                &routes[..],
                &settings[..],
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&manifest(dir.path(), &decls));
    let client = http1();

    for lang in API_LANGS {
        let url = |path: &str| host.url(&format!("/api-{lang}{path}"));
        let get = |path: &str| client.get(url(path));
        let sum = |body: &'static str| client.post(url("/sum")).body(body);

        let hello = get("/hello?name=J%C3%BCrgen+von%20Neumann").header("x-user", "ada");
        let message = "Hello, Jürgen von Neumann!";
        let greeting = json!({"message": message, "user": "ada", "language": lang});
        check(lang, hello, 200, greeting).await;
        let greeting = json!({"message": "Hello, world!", "user": "anonymous", "language": lang});
        check(lang, get("/hello"), 200, greeting).await;

        let numbers = sum(r#"{"numbers": [1, 2.5, 3]}"#);
        check(lang, numbers, 200, json!({"sum": 6.5, "count": 3})).await;
        let none = sum(r#" {"numbers":[]} "#);
        check(lang, none, 200, json!({"sum": 0, "count": 0})).await;
        let bad = [
            r#"{"numbers": [1, 2"#,
            "[1, 2]",
            r#"{"numbers": [1, "2"]}"#,
            "no",
        ];
        for body in bad {
            check_error(lang, sum(body), 400).await;
        }

        for code in [200, 201, 418, 503, 599] {
            let answer = json!({"status": code});
            check(lang, get(&format!("/status/{code}")), code, answer).await;
        }
        // HTTP forbids a body with a 204.
        let response = get("/status/204").send().await.unwrap();
        assert_eq!(response.status(), 204, "{lang}");
        assert_eq!(response.text().await.unwrap(), "", "{lang}");
        for code in ["199", "600", "abc", "-1"] {
            check_error(lang, get(&format!("/status/{code}")), 400).await;
        }

        let body = r#"{"id": 1, "name": "Ada"}"#;
        let called = json!({"backend_status": 200, "backend_body": body});
        check(lang, get("/backend"), 200, called).await;
        let refused = client.get(host.url(&format!("/api-{lang}-unlisted/backend")));
        check_error(lang, refused, 502).await;

        for path in ["/nope", "/hello/there", "/status/418/x", "/sum"] {
            check(lang, get(path), 404, json!({"error": "no such path"})).await;
        }
        let wrong_method = client.post(url("/hello"));
        check(lang, wrong_method, 404, json!({"error": "no such path"})).await;

        let logged = format!("api-{lang}: GET /api-{lang}/status/418 -> 418");
        let line = host.wait_for_line(Duration::from_secs(5), |l| l.contains(&logged));
        let line = line.unwrap_or_else(|| panic!("no {logged:?} in:\n{}", host.log()));
        assert!(line.contains(&format!("function=api-{lang} ")), "{line}");
    }

    let requests = backend.requests.lock().unwrap().clone();
    let targets: Vec<&str> = requests.iter().map(|(target, _)| target.as_str()).collect();
    assert_eq!(targets, ["/users/1"; API_LANGS.len()]);
    assert_eq!(unlisted.received(), 0);
}

/// Sends `request` to the `api-<lang>` example; checks that it answers
/// `status` with the JSON `body`.
async fn check(lang: &str, request: reqwest::RequestBuilder, status: u16, body: Value) {
    let (got, answer) = json_answer(lang, request).await;
    assert_eq!((got, &answer), (status, &body), "{lang}");
}

/// Like [`check`], for an answer `{"error": "<a reason>"}`.
async fn check_error(lang: &str, request: reqwest::RequestBuilder, status: u16) {
    let (got, answer) = json_answer(lang, request).await;
    let reason = answer.get("error").and_then(Value::as_str);
    let fields = answer.as_object().map(|o| o.len());
    assert!(
        got == status && fields == Some(1) && reason.is_some_and(|r| !r.is_empty()),
        "{lang}: expected {status} with an error, got {got} {answer}"
    );
}

/// The status and body of the answer to `request`, which must be JSON and
/// say so.
async fn json_answer(lang: &str, request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").cloned();
    let text = response.text().await.unwrap();
    let json = content_type
        .as_ref()
        .is_some_and(|v| v == "application/json");
    assert!(json, "{lang}: {status} {content_type:?} {text}");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{lang}: {status} with a body that is not JSON ({e}): {text}"));
    (status, body)
}
