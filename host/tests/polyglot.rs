//! Components built by each language's standard toolchain run unchanged:
//! componentize-js, componentize-py, wit-bindgen C and C++, and Go through
//! the preview1 adapter. They import different parts of WASI 0.2 at
//! different minor versions, which the host must all satisfy.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Host, h2c, http1, manifest, repo};

const LANGS: [&str; 5] = ["js", "py", "c", "cpp", "go"];

/// Installs the toolchains (once per machine) and builds every hello.
fn build_polyglot() -> PathBuf {
    let status = Command::new(repo().join("scripts/build-polyglot"))
        .status()
        .expect("cannot run scripts/build-polyglot");
    assert!(status.success(), "scripts/build-polyglot failed");
    repo().join("target/polyglot")
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
