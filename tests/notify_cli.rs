//! `canary-notifier notify` as a user runs it: per-destination results, exit codes,
//! start-up errors, and no secret in any output or log line.

mod support;

use std::process::{Command, Output};
use support::receiver::{Receiver, Reply};

fn notify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canary-notifier"))
        .arg("notify")
        .args(args)
        .env_remove("SLACK_URL")
        .env_remove("MSTEAMS_URL")
        .env_remove("EVENT_WEBHOOK_URL")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

async fn notify_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        notify(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn delivers_flagger_json_and_prints_each_destination() {
    let r = Receiver::start().await;
    r.script("/teams", vec![Reply::status(202)]);
    let out = notify_async(vec![
        "--allow-host".into(),
        "127.0.0.1".into(),
        "--event-url".into(),
        r.url("/flagger"),
        "--msteams-url".into(),
        r.url("/teams"),
        "--name".into(),
        "podinfo".into(),
        "--namespace".into(),
        "test".into(),
        "--phase".into(),
        "Progressing".into(),
        "--message".into(),
        "New revision detected! Scaling up podinfo.test".into(),
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let base = format!("http://{}", r.addr);
    assert!(
        stdout.contains(&format!("msteams {base}: delivered (HTTP 202, 1 attempt")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "event_webhook {base}: delivered (HTTP 200, 1 attempt"
        )),
        "{stdout}"
    );
    let got = r.requests_to("/flagger");
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["name"], "podinfo");
    assert_eq!(body["namespace"], "test");
    assert_eq!(body["phase"], "Progressing");
    assert_eq!(
        body["metadata"]["eventMessage"],
        "New revision detected! Scaling up podinfo.test"
    );
    assert_eq!(body["metadata"]["eventType"], "Normal");
    assert!(
        body["metadata"]["timestamp"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1_700_000_000_000
    );
    assert_eq!(
        r.requests_to("/teams")[0].json()["type"],
        "message",
        "a Workflows URL gets an Adaptive Card"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_exit_1_and_no_secret_reaches_output_or_logs() {
    let r = Receiver::start().await;
    for path in [
        "/services/T000/B000/SECRETSLACK",
        "/teams/SECRETTEAMS",
        "/hook/SECRETHOOK",
    ] {
        r.script(path, vec![Reply::status(500).body("echo: SECRETBODY"); 10]);
    }
    let out = notify_async(vec![
        "--log-level".into(),
        "trace".into(),
        "--allow-host".into(),
        "127.0.0.1".into(),
        "--slack-url".into(),
        r.url("/services/T000/B000/SECRETSLACK"),
        "--slack-token".into(),
        "xoxb-SECRETTOKEN".into(),
        "--slack-channel".into(),
        "general".into(),
        "--msteams-url".into(),
        r.url("/teams/SECRETTEAMS"),
        "--event-url".into(),
        format!("{}?token=SECRETQUERY", r.url("/hook/SECRETHOOK")),
        "--signing-key".into(),
        "SECRETSIGNINGKEY-0123456789".into(),
        "--retries".into(),
        "2".into(),
        "--retry-backoff".into(),
        "10ms".into(),
        "--name".into(),
        "podinfo".into(),
        "--message".into(),
        "Canary failed".into(),
        "--severity".into(),
        "error".into(),
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stdout
            .contains("failed after 3 attempts: HTTP 500 Internal Server Error (no retries left)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("retrying notification"),
        "debug logs were captured: {stderr}"
    );
    // Every secret above contains "SECRET": URL paths, query, token, signing key, reply body.
    assert!(
        !stdout.contains("SECRET"),
        "stdout leaks a secret: {stdout}"
    );
    assert!(!stderr.contains("SECRET"), "logs leak a secret: {stderr}");
    assert_eq!(
        r.requests().len(),
        9,
        "three destinations, three attempts each"
    );
}

#[test]
fn start_up_errors_exit_2_without_echoing_secrets() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["--slack-url", "https://hooks.slack.com/services/SECRET"],
            "error: --slack-channel: Slack is configured but no channel is set",
        ),
        (
            &["--msteams-url", "teams.example/SECRET"],
            "error: --msteams-url (MSTEAMS_URL): not a valid absolute URL",
        ),
        (
            &["--event-webhook", "gopher://h/SECRET"],
            "error: --event-webhook (EVENT_WEBHOOK_URL): scheme \"gopher\" is not supported",
        ),
        (
            &["--event-url", "not a url SECRET"],
            "error: --event-url: not a valid absolute URL",
        ),
        (
            &["--signing-key", "SECRET"],
            "error: --signing-key (CANARY_NOTIFIER_SIGNING_KEY): is 6 bytes long",
        ),
        (&[], "error: nothing to notify"),
    ];
    for (args, want) in cases {
        let mut all = vec!["--name", "podinfo", "--message", "m"];
        all.extend_from_slice(args);
        let out = notify(&all);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(want), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("SECRET") && !stdout.contains("SECRET"),
            "{stderr}"
        );
    }
    // Environment variables under Flagger's names work the same way.
    let out = Command::new(env!("CARGO_BIN_EXE_canary-notifier"))
        .args(["notify", "--name", "p", "--message", "m"])
        .env("SLACK_URL", "https://hooks.slack.com/services/SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--slack-channel"));
    // --help never shows secret environment values.
    let out = Command::new(env!("CARGO_BIN_EXE_canary-notifier"))
        .args(["notify", "--help"])
        .env("SLACK_URL", "https://hooks.slack.com/services/SECRET")
        .env("SLACK_TOKEN", "xoxb-SECRET")
        .output()
        .unwrap();
    assert!(!text(&out).0.contains("SECRET"));
}
