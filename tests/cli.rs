//! The binary's commands as a user runs them: output and exit codes.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canary-notifier"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn check_examples_gives_the_documented_verdicts() {
    let out = run(&["check", "examples/canaries.yaml"], &[], None);
    assert_eq!(out.status.code(), Some(1), "a denied canary exits 1");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("examples/canaries.yaml#1 Canary test/podinfo: allowed\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("examples/canaries.yaml#2 Canary test/frontend: allowed with defaults\n")
    );
    assert!(stdout.contains("  default: add /spec/analysis/webhooks/0/timeout = \"10s\"\n"));
    assert!(stdout.contains("examples/canaries.yaml#3 Canary test/checkout: denied\n"));
    assert!(stdout.contains(
        "  error: spec.analysis.webhooks[1].url: scheme \"ftp\" is not supported; use http or https\n"
    ));
    assert!(stdout.ends_with("3 canaries checked: 2 allowed, 1 denied\n"));
}

#[test]
fn check_json_output_has_one_entry_per_canary() {
    let out = run(
        &["check", "--output", "json", "examples/canaries.yaml"],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let summary: Vec<(&str, &str, bool, usize, usize)> = entries
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["namespace"].as_str().unwrap(),
                e["allowed"].as_bool().unwrap(),
                e["errors"].as_array().unwrap().len(),
                e["patch"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("podinfo", "test", true, 0, 0),
            ("frontend", "test", true, 0, 3),
            ("checkout", "test", false, 5, 1)
        ]
    );
    let first_error = &entries[2]["errors"][0];
    assert_eq!(first_error["field"], "spec.analysis.webhooks[1].url");
    assert_eq!(
        first_error["message"],
        "scheme \"ftp\" is not supported; use http or https"
    );
    assert_eq!(
        entries[1]["patch"][1],
        serde_json::json!({"op": "add", "path": "/spec/analysis/webhooks/0/timeout", "value": "10s"})
    );
    assert!(entries[0]["warnings"].as_array().unwrap().is_empty());
}

const GOOD: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "a", "namespace": "n"},
   "spec": {"analysis": {"webhooks": [{"name": "e", "type": "event", "url": "http://127.0.0.1:9000/", "timeout": "1s"}]}}},
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}}
]}"#;

#[test]
fn check_reads_stdin_json_lists_and_honours_the_policy_flags() {
    // Loopback is blocked by default...
    let out = run(&["check", "-"], &[], Some(GOOD));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("host \"127.0.0.1\" is a loopback address"));
    // ...and allowed by --allow-host, as flag or environment variable.
    let out = run(&["check", "--allow-host", "127.0.0.1"], &[], Some(GOOD));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("<stdin>#1 Canary n/a: allowed"));
    let out = run(
        &["check"],
        &[("CANARY_NOTIFIER_ALLOW_HOSTS", "localhost,127.0.0.1")],
        Some(GOOD),
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn unreadable_input_exits_2_naming_file_and_document() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Canary\n---\nspec: [unclosed\n").unwrap();
    let bad = bad.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["check", "does-not-exist.yaml"],
            "error: does-not-exist.yaml: cannot read",
        ),
        (
            &["check", "examples/canaries.yaml", bad],
            "bad.yaml: document 2 (line 3): cannot parse YAML or JSON",
        ),
        (
            &[
                "check",
                "--deny-cidr",
                "10.0.0.0/99",
                "examples/canaries.yaml",
            ],
            "invalid --deny-cidr value \"10.0.0.0/99\"",
        ),
        (&["check", "--output", "xml"], "invalid value 'xml'"),
    ];
    for (args, want) in cases {
        let out = run(args, &[], Some(""));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a partial report");
    }
}

#[test]
fn serve_rejects_bad_settings_before_starting() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().to_string();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case; 7] = [
        (
            &["serve", "--tls-reload-interval", "0s"],
            &[],
            2,
            "invalid --tls-reload-interval",
        ),
        (
            &["serve"],
            &[("CANARY_NOTIFIER_REQUEST_TIMEOUT", "0ms")],
            2,
            "invalid --request-timeout",
        ),
        (
            &["serve"],
            &[("CANARY_NOTIFIER_LISTEN_ADDR", "not-an-address")],
            2,
            "--listen-addr",
        ),
        (
            &["serve", "--tls-reload-interval", "soon"],
            &[],
            2,
            "--tls-reload-interval",
        ),
        (
            &["serve", "--allow-cidr", "x"],
            &[],
            2,
            "invalid --allow-cidr value \"x\"",
        ),
        (
            &["serve", "--max-body-bytes", "0"],
            &[],
            2,
            "--max-body-bytes",
        ),
        (
            &[
                "serve",
                "--listen-addr",
                &taken,
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            &[],
            1,
            "cannot listen on --listen-addr",
        ),
    ];
    for (args, env, code, want) in cases {
        let out = run(args, env, None);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?} {env:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn certs_writes_a_usable_set() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = run(
        &[
            "certs",
            "--service",
            "cn",
            "--namespace",
            "ops",
            "--ip",
            "127.0.0.1",
            "--dns",
            "cn.example",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("cn, cn.ops, cn.ops.svc, cn.ops.svc.cluster.local, cn.example")
    );
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(
            std::fs::read_to_string(out_dir.join(f))
                .unwrap()
                .starts_with("-----BEGIN"),
            "{f}"
        );
    }
    let out = run(
        &["certs", "--days", "0", "--out", out_dir.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--days must be at least 1"));
}

#[test]
fn committed_crd_copies_match_the_code() {
    let out = run(&["crd"], &[], None);
    assert_eq!(out.status.code(), Some(0));
    let generated = text(&out.stdout);
    assert!(generated.contains("name: canaries.flagger.app"));
    for path in [
        "manifests/components/crd/crd.yaml",
        "manifests/helm/canary-notifier/files/crd.yaml",
    ] {
        let committed = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is out of date: run `cargo run -q -- crd > {path}`"
        );
    }
}
