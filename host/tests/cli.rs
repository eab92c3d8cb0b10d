//! The commands that change a running host (`host deploy`, `functions`,
//! `revisions`, `traffic`, `rollback`, `delete`), run as a user would, against
//! a real host: what they print, and the host's reason when it refuses.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Host, TOKEN, example, guest, http1, token_file, write};

/// Runs `host <args>` against `host`'s admin API, with the token in the
/// environment.
fn run(host: &Host, args: &[&str]) -> Output {
    Command::new(common::host_binary())
        .args(args)
        .env("SHOAL_ADMIN", format!("http://{}", host.admin))
        .env("SHOAL_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("cannot run the host binary")
}

async fn body(host: &Host, path: &str) -> String {
    let response = http1().get(host.url(path)).send().await.unwrap();
    response.text().await.unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_split_roll_back_and_delete_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::manifest(
        dir.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    let token = token_file(dir.path());
    let args = ["--admin-token-file", path(&token)];
    let host = Host::start_with(&manifest, &dir.path().join("data"), &args, &[]).unwrap();

    let out = common::succeeded(&run(
        &host,
        &[
            "deploy",
            path(&example("wasip2-env")),
            "--name",
            "env",
            "--route",
            "/env",
            "--env",
            "GREETING=from the cli",
        ],
    ));
    assert!(out.starts_with("deployed env-00001 (sha256:"), "{out}");
    assert!(out.contains("added env"), "{out}");
    assert!(body(&host, "/env").await.contains("GREETING=from the cli"));

    // A definition file gives the other fields; --route overrides its routes.
    let definition = write(
        dir.path(),
        "env.toml",
        "routes = [\"/elsewhere\"]\nenv = { FROM = \"file\" }\ntimeout = \"5s\"\n",
    );
    let out = common::succeeded(&run(
        &host,
        &[
            "deploy",
            path(&guest("counter")),
            "--name",
            "env",
            "--route",
            "/env",
            "--file",
            path(&definition),
        ],
    ));
    assert!(out.starts_with("deployed env-00002"), "{out}");
    assert_eq!(body(&host, "/env").await, "1\n");

    let out = common::succeeded(&run(&host, &["functions"]));
    let line = out
        .lines()
        .find(|l| l.starts_with("env "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("deployed") && line.contains("env-00002") && line.contains("/env"),
        "{line}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("hello ") && l.contains("manifest")),
        "{out}"
    );

    let out = common::succeeded(&run(
        &host,
        &[
            "traffic",
            "env",
            "env-00001=100",
            "--pin",
            "x-canary=true=env-00002",
        ],
    ));
    assert!(out.contains("env-00001"), "{out}");
    assert!(body(&host, "/env").await.contains("GREETING"));
    let pinned = http1()
        .get(host.url("/env"))
        .header("x-canary", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(pinned.text().await.unwrap(), "1\n");
    let out = common::succeeded(&run(&host, &["revisions", "env"]));
    let first = out.lines().find(|l| l.starts_with("env-00001")).unwrap();
    let second = out.lines().find(|l| l.starts_with("env-00002")).unwrap();
    assert!(first.contains("100%"), "{out}");
    assert!(second.contains("x-canary: true"), "{out}");

    // Refusals exit non-zero with the host's reason, and change nothing.
    let refused = run(&host, &["traffic", "env", "env-00001=60", "env-00002=60"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("400 Bad Request") && stderr.contains("add up to 120"),
        "{stderr}"
    );
    let refused = run(
        &host,
        &[
            "deploy",
            path(&example("hello")),
            "--name",
            "hello",
            "--route",
            "/x",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("declared in the manifest"));
    let wrong_token = Command::new(common::host_binary())
        .args([
            "functions",
            "--admin",
            &format!("http://{}", host.admin),
            "--token",
            "nope-nope-nope-nope",
        ])
        .output()
        .unwrap();
    assert_eq!(wrong_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong_token.stderr).contains("401 Unauthorized"));

    let out = common::succeeded(&run(&host, &["rollback", "env", "env-00002"]));
    assert_eq!(out.trim(), "function env: all traffic to env-00002");
    assert_eq!(body(&host, "/env").await, "1\n");
    let out = common::succeeded(&run(&host, &["rollback", "env"]));
    assert_eq!(out.trim(), "function env: all traffic to env-00001");

    let out = common::succeeded(&run(&host, &["delete", "env"]));
    assert_eq!(out.trim(), "function env deleted");
    assert_eq!(
        http1().get(host.url("/env")).send().await.unwrap().status(),
        404
    );
    let refused = run(&host, &["delete", "env"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("404 Not Found"));
}
