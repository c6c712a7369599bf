//! The real operator binary against a loopback fake Kubernetes API server, with
//! local Slack and event-webhook receivers: what each scenario must deliver, and
//! nothing more. No real cluster is involved.

mod support;

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::fake_api::{FakeApi, Resource};
use support::operator::{Operator, cert_dir};
use support::receiver::{Receiver, Reply};
use support::{FakeCluster, fake_cluster, wait_for};

struct World {
    api: FakeApi,
    kubeconfig: PathBuf,
    certs: PathBuf,
    slack: Receiver,
    hooks: Receiver,
    _keep: (FakeCluster, tempfile::TempDir),
}

impl World {
    async fn new() -> World {
        let cluster = fake_cluster(vec![
            Resource::canaries(),
            Resource::events(),
            Resource::events_v1(),
            Resource::leases(),
        ])
        .await;
        let (cert_tmp, certs) = cert_dir();
        World {
            api: cluster.api.clone(),
            kubeconfig: cluster.kubeconfig.clone(),
            certs,
            slack: Receiver::start().await,
            hooks: Receiver::start().await,
            _keep: (cluster, cert_tmp),
        }
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--slack-url".into(),
            self.slack.url("/slack"),
            "--slack-channel".into(),
            "general".into(),
            "--event-webhook".into(),
            self.hooks.url("/events"),
        ]
    }

    fn start(&self, identity: &str) -> Operator {
        Operator::start(&self.kubeconfig, &self.certs, identity, &self.flags())
    }

    fn start_with(&self, identity: &str, extra: &[&str]) -> Operator {
        let mut flags = self.flags();
        flags.extend(extra.iter().map(|s| s.to_string()));
        Operator::start(&self.kubeconfig, &self.certs, identity, &flags)
    }

    fn put(&self, name: &str, phase: &str, revision: &str, status: Value) {
        let existing = self.api.get(&Resource::canaries(), Some("test"), name);
        let mut canary = existing.unwrap_or_else(|| {
            json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                "metadata": {"name": name, "namespace": "test"},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                         "progressDeadlineSeconds": 60,
                         "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50}}
            })
        });
        canary["status"] = json!({"phase": phase, "failedChecks": 0,
                                  "lastTransitionTime": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()});
        if !revision.is_empty() {
            canary["status"]["lastAppliedSpec"] = json!(revision);
        }
        if let (Some(s), Some(extra)) = (canary["status"].as_object_mut(), status.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        self.api.upsert(&Resource::canaries(), canary);
    }

    fn notified_phase(&self, name: &str) -> Option<String> {
        let canary = self.api.get(&Resource::canaries(), Some("test"), name)?;
        let raw = canary["metadata"]["annotations"]["canary-notifier.dev/notified"]
            .as_str()?
            .to_string();
        let state: Value = serde_json::from_str(&raw).ok()?;
        state["phase"].as_str().map(str::to_string)
    }

    async fn wait_notified(&self, name: &str, phase: &str) {
        wait_for(&format!("{name} recorded as {phase}"), || {
            self.notified_phase(name).as_deref() == Some(phase)
        })
        .await;
    }

    fn slack_texts(&self) -> Vec<String> {
        self.slack
            .requests_to("/slack")
            .iter()
            .map(|r| {
                r.json()["attachments"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    fn hook_messages(&self) -> Vec<String> {
        self.hooks
            .requests_to("/events")
            .iter()
            .map(|r| {
                r.json()["metadata"]["eventMessage"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    /// A core/v1 Event as Flagger's recorder writes it.
    fn flagger_event(&self, canary: &str, id: &str, count: i64, message: &str) {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.api.upsert(
            &Resource::events(),
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{canary}.{id}"), "namespace": "test"},
                "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": canary, "namespace": "test"},
                "reason": "Synced", "message": message, "type": "Normal", "count": count,
                "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "flagger"}
            }),
        );
    }
}

/// Gives the operator time to (wrongly) send more; counts must not change.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// Waits until the operator's /metrics contains `want` (refreshed every 2 s).
async fn wait_metric(op: &Operator, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if op.metrics().await.contains(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "metrics never showed {want}: {}\n{}",
        op.metrics().await,
        op.log_text()
    );
}

async fn wait_leader(ops: &[&Operator]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for (i, op) in ops.iter().enumerate() {
            if op.is_leader().await {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader elected");
}

const INITIALIZED: &str = "New Deployment detected, initialization completed.";
const NEW_REVISION: &str = "New revision detected, progressing canary analysis.";
const SUCCEEDED: &str = "Canary analysis completed successfully, promotion finished.";

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_sends_exactly_the_expected_messages() {
    let w = World::new().await;
    let op = w.start("op-a");
    wait_leader(&[&op]).await;
    w.put("podinfo", "", "", json!({}));
    w.put("podinfo", "Initializing", "", json!({}));
    w.put("podinfo", "Initialized", "r1", json!({}));
    w.wait_notified("podinfo", "Initialized").await;
    w.put("podinfo", "Progressing", "r2", json!({"canaryWeight": 10}));
    w.wait_notified("podinfo", "Progressing").await;
    w.put("podinfo", "Progressing", "r2", json!({"canaryWeight": 20})); // a tick: nothing new
    w.put("podinfo", "Promoting", "r2", json!({}));
    w.put("podinfo", "Finalising", "r2", json!({}));
    w.put("podinfo", "Succeeded", "r2", json!({}));
    w.wait_notified("podinfo", "Succeeded").await;
    settle().await;
    assert_eq!(
        w.slack_texts(),
        [INITIALIZED, NEW_REVISION, SUCCEEDED],
        "{}",
        op.log_text()
    );
    let first = &w.slack.requests_to("/slack")[0].json();
    assert_eq!(first["attachments"][0]["author_name"], "podinfo.test");
    let fields: Vec<&str> = first["attachments"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "Target",
            "Failed checks threshold",
            "Progress deadline",
            "Traffic routing"
        ]
    );
    // Flagger-compatible metrics follow the phase; name is the target's.
    wait_metric(
        &op,
        r#"flagger_canary_status{name="podinfo",namespace="test"} 1"#,
    )
    .await;
    wait_metric(&op, r#"flagger_canary_total{namespace="test"} 1"#).await;
    // The series go away with the canary.
    w.api.delete(&Resource::canaries(), Some("test"), "podinfo");
    let deadline = Instant::now() + Duration::from_secs(30);
    while op.metrics().await.contains("flagger_canary_total{") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = op.metrics().await;
    assert!(
        !metrics.contains("flagger_canary_status{") && !metrics.contains("flagger_canary_total{"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_events_reach_the_event_webhook_once_each() {
    let w = World::new().await;
    let op = w.start("op-a");
    wait_leader(&[&op]).await;
    w.put("podinfo", "Progressing", "r1", json!({}));
    w.flagger_event(
        "podinfo",
        "a1",
        1,
        "New revision detected! Scaling up podinfo.test",
    );
    w.flagger_event("podinfo", "a2", 1, "Advance podinfo.test canary weight 10");
    wait_for("two events forwarded", || w.hook_messages().len() == 2).await;
    // The aggregated repeat of an Event is a new occurrence.
    w.flagger_event("podinfo", "a2", 2, "Advance podinfo.test canary weight 10");
    wait_for("the repeat forwarded", || w.hook_messages().len() == 3).await;
    settle().await;
    assert_eq!(
        w.hook_messages(),
        [
            "New revision detected! Scaling up podinfo.test",
            "Advance podinfo.test canary weight 10",
            "Advance podinfo.test canary weight 10"
        ]
    );
    let body = w.hooks.requests_to("/events")[0].json();
    assert_eq!(body["name"], "podinfo");
    assert_eq!(body["phase"], "Progressing");
    assert_eq!(body["metadata"]["eventType"], "Normal");
    // Restarting forwards nothing again.
    drop(op);
    let op = w.start("op-b");
    wait_leader(&[&op]).await;
    settle().await;
    assert_eq!(w.hook_messages().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_alert_once_with_their_reason() {
    let w = World::new().await;
    let op = w.start("op-a");
    wait_leader(&[&op]).await;
    for name in ["threshold", "deadline"] {
        w.put(name, "Initialized", "r1", json!({}));
        w.wait_notified(name, "Initialized").await;
        w.put(name, "Progressing", "r2", json!({}));
        w.wait_notified(name, "Progressing").await;
    }
    w.put("threshold", "Failed", "r2", json!({"failedChecks": 5}));
    // Never ready: rolled back after the progress deadline with no failed checks.
    let late = std::time::SystemTime::now() + Duration::from_secs(61);
    w.put(
        "deadline",
        "Failed",
        "r2",
        json!({"lastTransitionTime": humantime::format_rfc3339_seconds(late).to_string()}),
    );
    w.wait_notified("threshold", "Failed").await;
    w.wait_notified("deadline", "Failed").await;
    settle().await;
    let errors: Vec<Value> = w
        .slack
        .requests_to("/slack")
        .iter()
        .map(|r| r.json())
        .filter(|b| b["attachments"][0]["color"] == "danger")
        .collect();
    let mut texts: Vec<&str> = errors
        .iter()
        .map(|b| b["attachments"][0]["text"].as_str().unwrap())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "Failed checks threshold reached 5",
            "Progress deadline exceeded: not ready within 60s"
        ]
    );
    wait_metric(
        &op,
        r#"flagger_canary_status{name="threshold",namespace="test"} 2"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_delivers_missed_transitions_once_and_repeats_nothing() {
    let w = World::new().await;
    let mut op = w.start("op-a");
    wait_leader(&[&op]).await;
    w.put("podinfo", "Initialized", "r1", json!({}));
    w.wait_notified("podinfo", "Initialized").await;
    op.kill();
    // Two transitions while the operator is down.
    w.put("podinfo", "Progressing", "r2", json!({}));
    w.put("podinfo", "Succeeded", "r2", json!({}));
    let op = w.start("op-a");
    w.wait_notified("podinfo", "Succeeded").await;
    settle().await;
    assert_eq!(
        w.slack_texts(),
        [INITIALIZED, NEW_REVISION, SUCCEEDED],
        "{}",
        op.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_watch_relists_without_duplicates() {
    let w = World::new().await;
    let op = w.start("op-a");
    wait_leader(&[&op]).await;
    w.put("podinfo", "Initialized", "r1", json!({}));
    w.wait_notified("podinfo", "Initialized").await;
    w.flagger_event("podinfo", "e1", 1, "Initialization done! podinfo.test");
    wait_for("event forwarded", || w.hook_messages().len() == 1).await;
    w.api.expire_watches();
    settle().await;
    w.put("podinfo", "Progressing", "r2", json!({}));
    w.wait_notified("podinfo", "Progressing").await;
    w.api.expire_watches();
    settle().await;
    assert_eq!(
        w.slack_texts(),
        [INITIALIZED, NEW_REVISION],
        "{}",
        op.log_text()
    );
    assert_eq!(w.hook_messages(), ["Initialization done! podinfo.test"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_is_down_gets_the_message_once_it_is_back() {
    let w = World::new().await;
    // Down for the first several attempts (each reconcile tries twice).
    w.slack.script("/slack", vec![Reply::status(503); 6]);
    let op = w.start("op-a");
    wait_leader(&[&op]).await;
    w.put("podinfo", "Initialized", "r1", json!({}));
    w.wait_notified("podinfo", "Initialized").await;
    settle().await;
    let requests = w.slack.requests_to("/slack");
    assert!(requests.len() >= 7, "retried: {}", requests.len());
    assert_eq!(
        w.slack_texts().iter().filter(|t| *t == INITIALIZED).count(),
        requests.len(),
        "same message each time"
    );
    let metrics = op.metrics().await;
    assert!(
        metrics.contains(r#"canary_notifier_notifications_sent_total{channel="slack"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("canary_notifier_reconcile_errors_total{reason=\"undelivered\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_sends_and_a_successor_takes_over_without_loss_or_duplicates() {
    let w = World::new().await;
    let mut a = w.start("op-a");
    let mut b = w.start("op-b");
    let leader = wait_leader(&[&a, &b]).await;
    w.put("podinfo", "Initialized", "r1", json!({}));
    w.wait_notified("podinfo", "Initialized").await;
    settle().await;
    assert_eq!(w.slack_texts(), [INITIALIZED]);
    let (gone, successor) = if leader == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(
        !successor.is_leader().await,
        "two leaders at once:\n{}\n---\n{}",
        gone.log_text(),
        successor.log_text()
    );
    gone.kill();
    w.put("podinfo", "Progressing", "r2", json!({}));
    wait_leader(&[&*successor]).await;
    w.wait_notified("podinfo", "Progressing").await;
    w.put("podinfo", "Succeeded", "r2", json!({}));
    w.wait_notified("podinfo", "Succeeded").await;
    settle().await;
    assert_eq!(w.slack_texts(), [INITIALIZED, NEW_REVISION, SUCCEEDED]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resync_of_unchanged_canaries_sends_nothing() {
    let w = World::new().await;
    let op = w.start("op-a");
    wait_leader(&[&op]).await;
    for name in ["a", "b", "c"] {
        w.put(name, "Initialized", "r1", json!({}));
        w.wait_notified(name, "Initialized").await;
    }
    settle().await;
    let before = (w.slack.requests().len(), w.hooks.requests().len());
    // Touch each canary without changing its status, expire the watch, restart.
    for name in ["a", "b", "c"] {
        let mut c = w
            .api
            .get(&Resource::canaries(), Some("test"), name)
            .unwrap();
        c["metadata"]["labels"] = json!({"touched": "yes"});
        w.api.upsert(&Resource::canaries(), c);
    }
    w.api.expire_watches();
    drop(op);
    let op = w.start("op-a");
    wait_leader(&[&op]).await;
    wait_for("reconciled", || true).await;
    settle().await;
    assert_eq!((w.slack.requests().len(), w.hooks.requests().len()), before);
    assert_eq!(w.slack_texts().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn transitions_mode_sends_transitions_to_event_webhooks_and_bad_urls_are_never_called() {
    let w = World::new().await;
    let op = w.start_with("op-a", &["--events-from", "transitions"]);
    wait_leader(&[&op]).await;
    w.put("podinfo", "Initialized", "r1", json!({}));
    w.wait_notified("podinfo", "Initialized").await;
    wait_for("transition on webhook", || {
        w.hook_messages() == [INITIALIZED]
    })
    .await;
    // A canary whose own event URL breaks the policy (created while admission was down).
    let mut bad = json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "bad", "namespace": "test"},
        "spec": {"targetRef": {"kind": "Deployment", "name": "bad"},
                 "analysis": {"webhooks": [{"name": "meta", "type": "event", "url": "http://169.254.169.254/latest"}]}},
        "status": {"phase": "Initialized", "lastAppliedSpec": "r1"}
    });
    bad["metadata"]["annotations"] = json!({});
    w.api.upsert(&Resource::canaries(), bad);
    w.wait_notified("bad", "Initialized").await;
    wait_for("EventWebhookRejected recorded", || {
        w.api
            .list(&Resource::events_v1())
            .iter()
            .any(|e| e["reason"] == "EventWebhookRejected")
    })
    .await;
    let rejected = w
        .api
        .list(&Resource::events_v1())
        .into_iter()
        .find(|e| e["reason"] == "EventWebhookRejected")
        .unwrap();
    assert_eq!(rejected["type"], "Warning");
    assert!(
        rejected["note"].as_str().unwrap().contains("link-local"),
        "{rejected}"
    );
    // The canary's own (rejected) hook replaces the global one: nothing is sent for it.
    settle().await;
    assert_eq!(w.hook_messages(), [INITIALIZED]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_crd_is_a_clear_start_up_error() {
    let cluster = fake_cluster(vec![Resource::leases()]).await;
    let kubeconfig = cluster.kubeconfig.clone();
    let (_tmp, certs) = cert_dir();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_canary-notifier"));
    cmd.args([
        "serve",
        "--listen-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .arg("--tls-cert-file")
    .arg(certs.join("tls.crt"))
    .arg("--tls-key-file")
    .arg(certs.join("tls.key"))
    .env("KUBECONFIG", &kubeconfig);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the Canary CRD (canaries.flagger.app, v1beta1) is not installed in this cluster: install Flagger, or apply canary-notifier's copy with `kubectl apply -k manifests/components/crd`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_cannot_renew_stops_dispatching_before_the_lease_expires() {
    let w = World::new().await;
    let op = w.start("op-a");
    wait_leader(&[&op]).await;
    w.api.set_down(true);
    let cut = Instant::now();
    // Lease duration 4 s, grace 2 s: dispatch must stop before the Lease could pass to
    // another replica, i.e. within 4 s of the last renewal (which came before the cut).
    let deadline = Instant::now() + Duration::from_secs(30);
    while op.is_leader().await && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !op.is_leader().await,
        "still dispatching with an unreachable API server"
    );
    let stopped_after = cut.elapsed();
    assert!(
        stopped_after < Duration::from_secs(4),
        "stopped after {stopped_after:?}, not before the lease could expire"
    );
    w.api.set_down(false);
    wait_leader(&[&op]).await;
    w.put("podinfo", "Initialized", "r1", json!({}));
    w.wait_notified("podinfo", "Initialized").await;
    settle().await;
    assert_eq!(w.slack_texts(), [INITIALIZED]);
}
