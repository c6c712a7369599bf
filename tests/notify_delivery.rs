//! Notification delivery against real local receivers: exact payloads (golden
//! files), headers, retries, timeouts, isolation between destinations, outbound
//! safety and signing.

mod support;

use canary_notifier::destination_policy::DestinationPolicy;
use canary_notifier::metrics::Metrics;
use canary_notifier::notify::destination::{Channel, Delivery};
use canary_notifier::notify::dispatcher::{Dispatcher, QueueFull};
use canary_notifier::notify::event::{AlertFields, CanaryEvent, EventType, Severity};
use canary_notifier::notify::event_webhook::EventHook;
use canary_notifier::notify::resolver::Lookup;
use canary_notifier::notify::routing;
use canary_notifier::notify::sender::{DeliveryReport, FailureKind, Outcome, Sender};
use canary_notifier::notify::settings::{NotifyArgs, NotifySettings};
use canary_notifier::notify::teams::TeamsFormat;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::receiver::{Receiver, Reply};

fn args() -> NotifyArgs {
    NotifyArgs {
        slack_user: "flagger".into(),
        retries: 3,
        retry_backoff: Duration::from_millis(20),
        retry_budget: Duration::from_secs(30),
        queue_capacity: 10,
        ..Default::default()
    }
}

fn loopback_allowed() -> DestinationPolicy {
    DestinationPolicy::new(&[], &["127.0.0.1".into()], &[], &[]).unwrap()
}

fn settings(args: &NotifyArgs) -> NotifySettings {
    NotifySettings::from_args(args, loopback_allowed()).unwrap()
}

fn event(severity: Severity) -> CanaryEvent {
    CanaryEvent {
        name: "podinfo".into(),
        namespace: "test".into(),
        phase: "Progressing".into(),
        checksum: "7c9f2b1d".into(),
        message: "New revision detected, progressing canary analysis.".into(),
        event_type: if severity == Severity::Info {
            EventType::Normal
        } else {
            EventType::Warning
        },
        severity,
        timestamp_ms: 1_578_607_635_167,
        fields: AlertFields {
            target: Some("Deployment/podinfo.test".into()),
            failed_checks_threshold: Some(5),
            progress_deadline: Some("600s".into()),
            traffic_routing: Some("Weight step: 10 max: 50".into()),
        },
    }
}

fn hook(url: &str) -> EventHook {
    let mut h = EventHook::global(url.parse().unwrap());
    h.name = "notify".into();
    h
}

fn dispatcher(settings: &NotifySettings, lookup: Option<Lookup>) -> (Dispatcher, Metrics) {
    canary_notifier::tls::install_crypto_provider();
    let metrics = Metrics::new();
    let sender = Sender::with_lookup(settings, metrics.clone(), lookup).unwrap();
    (
        Dispatcher::new(sender, settings.queue_capacity, metrics.clone()),
        metrics,
    )
}

async fn send_all(settings: &NotifySettings, deliveries: Vec<Delivery>) -> Vec<DeliveryReport> {
    let (d, _) = dispatcher(settings, None);
    let pending: Vec<_> = deliveries
        .into_iter()
        .map(|x| d.submit(x).unwrap())
        .collect();
    let mut out = Vec::new();
    for p in pending {
        out.push(p.await.unwrap());
    }
    out
}

fn assert_golden(name: &str, body: &[u8]) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    let actual = String::from_utf8_lossy(body);
    if golden.trim_end() != actual {
        let out = format!("{}/target/golden-actual", env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(format!("{out}/{name}"), format!("{actual}\n")).unwrap();
        panic!(
            "{name} differs from the golden file; actual output written to target/golden-actual/{name}:\n{actual}"
        );
    }
}

#[tokio::test]
async fn every_channel_sends_its_exact_payload_and_headers() {
    let slack = Receiver::start().await;
    let teams = Receiver::start().await;
    let legacy = Receiver::start().await;
    let hooks = Receiver::start().await;
    let mut a = args();
    a.slack_url = Some(slack.url("/services/T000/B000/XXXX"));
    a.slack_channel = Some("general".into());
    a.slack_token = Some("xoxb-test-token".into());
    a.msteams_url = Some(teams.url("/workflows/abc"));
    a.cluster_name = Some("prod-eu".into());
    let s = settings(&a);
    let mut deliveries = routing::chat_deliveries(&event(Severity::Error), &s);
    let mut meta_hook = hook(&hooks.url("/flagger"));
    meta_hook.metadata = BTreeMap::from([
        ("team".into(), "payments".into()),
        ("eventType".into(), "ignored".into()),
    ]);
    deliveries.extend(routing::event_deliveries(
        &event(Severity::Info),
        &[meta_hook],
        &s,
    ));
    // The legacy MessageCard, chosen explicitly (auto picks it for *.webhook.office.com).
    a.msteams_url = Some(legacy.url("/webhookb2/legacy"));
    a.msteams_format = TeamsFormat::Messagecard;
    a.slack_url = None;
    a.slack_token = None;
    deliveries.extend(routing::chat_deliveries(
        &event(Severity::Warn),
        &settings(&a),
    ));

    let reports = send_all(&s, deliveries).await;
    assert!(reports.iter().all(DeliveryReport::delivered), "{reports:?}");

    let got = slack.requests_to("/services/T000/B000/XXXX");
    assert_eq!(got.len(), 1);
    assert_golden("slack.json", &got[0].body);
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer xoxb-test-token")
    );
    assert_eq!(
        got[0].header("content-type").as_deref(),
        Some("application/json")
    );

    let got = teams.requests_to("/workflows/abc");
    assert_golden("teams-adaptive.json", &got[0].body);
    assert_eq!(got[0].header("authorization"), None);

    let got = legacy.requests_to("/webhookb2/legacy");
    assert_golden("teams-messagecard.json", &got[0].body);

    let got = hooks.requests_to("/flagger");
    assert_golden("event-webhook.json", &got[0].body);
    assert_eq!(
        got[0].header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(
        got[0]
            .header("user-agent")
            .unwrap()
            .starts_with("canary-notifier/")
    );
    assert_eq!(
        got[0].header("x-canary-notifier-signature"),
        None,
        "unsigned without a key"
    );
}

#[tokio::test]
async fn canary_hooks_replace_the_global_webhook_and_all_are_called() {
    let r = Receiver::start().await;
    let mut a = args();
    a.event_webhook = Some(r.url("/global"));
    let s = settings(&a);
    let e = event(Severity::Info);
    assert_eq!(routing::event_deliveries(&e, &[], &s).len(), 1);
    let reports = send_all(
        &s,
        routing::event_deliveries(&e, &[hook(&r.url("/a")), hook(&r.url("/b"))], &s),
    )
    .await;
    assert!(reports.iter().all(DeliveryReport::delivered));
    assert_eq!(r.requests_to("/a").len(), 1);
    assert_eq!(r.requests_to("/b").len(), 1);
    assert_eq!(r.requests_to("/global").len(), 0);
}

async fn deliver_one(s: &NotifySettings, h: EventHook) -> DeliveryReport {
    let d = routing::event_deliveries(&event(Severity::Info), &[h], s);
    send_all(s, d).await.remove(0)
}

#[tokio::test]
async fn retry_table() {
    let r = Receiver::start().await;
    let s = settings(&args());
    // (replies, expected attempts, delivered?, detail contains)
    let cases: Vec<(&str, Vec<Reply>, u32, bool, &str)> = vec![
        (
            "/503-then-ok",
            vec![Reply::status(503), Reply::status(502)],
            3,
            true,
            "",
        ),
        ("/429", vec![Reply::status(429)], 2, true, ""),
        ("/408", vec![Reply::status(408)], 2, true, ""),
        (
            "/500x4",
            vec![Reply::status(500); 4],
            4,
            false,
            "HTTP 500 Internal Server Error (no retries left)",
        ),
        (
            "/400",
            vec![Reply::status(400)],
            1,
            false,
            "HTTP 400 Bad Request",
        ),
        (
            "/404",
            vec![Reply::status(404)],
            1,
            false,
            "HTTP 404 Not Found",
        ),
        (
            "/501",
            vec![Reply::status(501)],
            1,
            false,
            "HTTP 501 Not Implemented",
        ),
        ("/204", vec![Reply::status(204)], 1, true, ""),
        ("/299", vec![Reply::status(299)], 1, true, ""),
        (
            "/302",
            vec![Reply::status(302).header("location", "/elsewhere")],
            1,
            false,
            "redirects are not followed",
        ),
    ];
    for (path, replies, attempts, delivered, detail) in cases {
        r.script(path, replies);
        let report = deliver_one(&s, hook(&r.url(path))).await;
        assert_eq!(report.attempts, attempts, "{path}: {report}");
        assert_eq!(report.delivered(), delivered, "{path}: {report}");
        assert_eq!(r.requests_to(path).len() as u32, attempts, "{path}");
        if let Outcome::Failed { detail: d, .. } = &report.outcome {
            assert!(d.contains(detail), "{path}: {d}");
        }
    }
    assert!(
        r.requests_to("/elsewhere").is_empty(),
        "redirect was followed"
    );

    // A webhook's own `retries` sets its attempt count: retries 0 is one attempt.
    r.script("/once", vec![Reply::status(503)]);
    let mut h = hook(&r.url("/once"));
    h.retries = Some(0);
    let report = deliver_one(&s, h).await;
    assert_eq!((report.attempts, report.delivered()), (1, false));
}

#[tokio::test]
async fn retry_after_is_honoured_and_the_budget_is_separate() {
    let r = Receiver::start().await;
    let s = settings(&args());
    r.script("/ra", vec![Reply::status(503).header("retry-after", "1")]);
    let report = deliver_one(&s, hook(&r.url("/ra"))).await;
    assert!(report.delivered());
    let times: Vec<Instant> = r.requests_to("/ra").iter().map(|c| c.at).collect();
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= Duration::from_millis(950),
        "retried before Retry-After"
    );

    // A Retry-After beyond the retry budget ends the delivery instead of waiting.
    let mut a = args();
    a.retry_budget = Duration::from_secs(2);
    let s = settings(&a);
    r.script(
        "/ra-long",
        vec![Reply::status(429).header("retry-after", "3600")],
    );
    let started = Instant::now();
    let report = deliver_one(&s, hook(&r.url("/ra-long"))).await;
    assert!(started.elapsed() < Duration::from_secs(60));
    match &report.outcome {
        Outcome::Failed { reason, detail } => {
            assert_eq!(*reason, FailureKind::HttpStatus);
            assert!(detail.contains("retry budget of 2s used up"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn attempts_time_out_and_are_retried() {
    let r = Receiver::start().await;
    let s = settings(&args());
    r.script(
        "/slow",
        vec![Reply::status(200).delay(Duration::from_secs(5)); 2],
    );
    let mut h = hook(&r.url("/slow"));
    h.timeout = Duration::from_millis(200);
    h.retries = Some(1);
    let report = deliver_one(&s, h).await;
    assert_eq!(report.attempts, 2);
    assert!(
        matches!(
            report.outcome,
            Outcome::Failed {
                reason: FailureKind::Timeout,
                ..
            }
        ),
        "{report}"
    );
}

#[tokio::test]
async fn a_hung_destination_never_delays_another() {
    let hung = Receiver::start().await;
    let prompt = Receiver::start().await;
    let s = settings(&args());
    let (d, _) = dispatcher(&s, None);
    hung.script("/", vec![Reply::status(200).delay(Duration::from_secs(20))]);
    let e = event(Severity::Info);
    let mut slow = hook(&hung.url("/"));
    slow.timeout = Duration::from_secs(30);
    let slow_report = d
        .submit(routing::event_deliveries(&e, &[slow], &s).remove(0))
        .unwrap();
    // Wait until the hung receiver holds the request, then send elsewhere.
    while hung.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut fast_reports = Vec::new();
    for i in 0..5 {
        let h = hook(&prompt.url(&format!("/{i}")));
        fast_reports.push(
            d.submit(routing::event_deliveries(&e, &[h], &s).remove(0))
                .unwrap(),
        );
    }
    for r in fast_reports {
        assert!(r.await.unwrap().delivered());
    }
    assert_eq!(prompt.requests().len(), 5);
    // The hung delivery is still pending while all the others are done.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut slow_report = slow_report;
    assert!(
        slow_report.try_recv().is_err(),
        "the hung delivery finished early"
    );
    hung.stop();
}

#[tokio::test]
async fn per_destination_order_and_a_bounded_queue() {
    let r = Receiver::start().await;
    let mut a = args();
    a.queue_capacity = 2;
    let s = settings(&a);
    let (d, metrics) = dispatcher(&s, None);
    r.script(
        "/q",
        vec![Reply::status(200).delay(Duration::from_millis(500))],
    );
    let mut e = event(Severity::Info);
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..6 {
        e.message = format!("message {i}");
        let delivery = routing::event_deliveries(&e, &[hook(&r.url("/q"))], &s).remove(0);
        match d.submit(delivery) {
            Ok(rx) => accepted.push(rx),
            Err(full) => refused.push(full),
        }
        if i == 0 {
            // Let the worker take the first one, so the queue holds the next two.
            while r.requests().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    assert_eq!(accepted.len(), 3, "one in flight plus a queue of two");
    assert_eq!(refused.len(), 3);
    assert_eq!(
        refused[0],
        QueueFull {
            destination: format!("event_webhook http://{}", r.addr),
            capacity: 2
        }
    );
    for rx in accepted {
        assert!(rx.await.unwrap().delivered());
    }
    let order: Vec<String> = r
        .requests()
        .iter()
        .map(|c| {
            c.json()["metadata"]["eventMessage"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(order, ["message 0", "message 1", "message 2"]);
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(
            r#"canary_notifier_notification_queue_full_total{channel="event_webhook"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"canary_notifier_notification_queue_depth{channel="event_webhook"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"canary_notifier_notifications_sent_total{channel="event_webhook"} 3"#),
        "{text}"
    );
}

#[tokio::test]
async fn blocked_destinations_are_refused_at_send_time() {
    let r = Receiver::start().await;
    let strict = NotifySettings::from_args(&args(), DestinationPolicy::default()).unwrap();
    // An IP literal on the block list.
    let report = deliver_one(&strict, hook(&r.url("/"))).await;
    assert!(
        matches!(
            report.outcome,
            Outcome::Failed {
                reason: FailureKind::Refused,
                ..
            }
        ),
        "{report}"
    );
    assert_eq!(report.attempts, 0);
    // A harmless-looking name that resolves to loopback (DNS rebinding).
    let lookup: Lookup = Arc::new(|host: String| {
        Box::pin(async move {
            match host.as_str() {
                "rebind.example.test" => Ok(vec!["127.0.0.1".parse().unwrap()]),
                "mixed.example.test" => Ok(vec![
                    "169.254.169.254".parse().unwrap(),
                    "127.0.0.1".parse().unwrap(),
                ]),
                _ => Err(std::io::Error::other("unknown host")),
            }
        })
    });
    let (d, metrics) = dispatcher(&strict, Some(lookup.clone()));
    let url = format!("http://rebind.example.test:{}/", r.addr.port());
    let delivery =
        routing::event_deliveries(&event(Severity::Info), &[hook(&url)], &strict).remove(0);
    let report = d.submit(delivery).unwrap().await.unwrap();
    match &report.outcome {
        Outcome::Failed {
            reason: FailureKind::Refused,
            detail,
        } => {
            assert!(detail.contains("host \"rebind.example.test\" resolves to 127.0.0.1, which is a loopback address"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.attempts, 1, "refusals are not retried");
    assert!(r.requests().is_empty(), "a blocked destination was called");
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains(r#"canary_notifier_notifications_refused_total{channel="event_webhook"} 1"#)
    );

    // Exempting the address lets the same name through.
    let (d, _) = dispatcher(&settings(&args()), Some(lookup));
    let delivery =
        routing::event_deliveries(&event(Severity::Info), &[hook(&url)], &strict).remove(0);
    assert!(d.submit(delivery).unwrap().await.unwrap().delivered());
    assert_eq!(r.requests().len(), 1);
}

#[tokio::test]
async fn signatures_verify_with_an_independent_hmac() {
    let r = Receiver::start().await;
    let mut a = args();
    a.signing_key = Some("a-signing-key-of-32-bytes-length".into());
    let s = settings(&a);
    assert!(deliver_one(&s, hook(&r.url("/signed"))).await.delivered());
    let got = &r.requests_to("/signed")[0];
    let timestamp = got.header("x-canary-notifier-timestamp").unwrap();
    let signature = got.header("x-canary-notifier-signature").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"a-signing-key-of-32-bytes-length").unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    let expected = format!(
        "v1={}",
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_eq!(signature, expected);
    let age = canary_notifier::notify::event::now_ms() / 1000 - timestamp.parse::<u64>().unwrap();
    assert!(age < 300);
    // Chat channels are never signed.
    let mut a = a.clone();
    a.msteams_url = Some(r.url("/teams"));
    let s = settings(&a);
    send_all(&s, routing::chat_deliveries(&event(Severity::Info), &s)).await;
    assert_eq!(
        r.requests_to("/teams")[0].header("x-canary-notifier-signature"),
        None
    );
}

#[tokio::test]
async fn slack_ok_false_is_a_failure_and_not_retried() {
    let r = Receiver::start().await;
    let mut a = args();
    a.slack_url = Some(r.url("/api/chat.postMessage"));
    a.slack_channel = Some("nope".into());
    a.slack_token = Some("xoxb-1".into());
    let s = settings(&a);
    r.script(
        "/api/chat.postMessage",
        vec![Reply::status(200).body(r#"{"ok":false,"error":"channel_not_found"}"#)],
    );
    let report = send_all(&s, routing::chat_deliveries(&event(Severity::Info), &s))
        .await
        .remove(0);
    assert_eq!(report.channel, Channel::Slack);
    assert_eq!(report.attempts, 1);
    match &report.outcome {
        Outcome::Failed {
            reason: FailureKind::SlackError,
            detail,
        } => {
            assert_eq!(
                detail,
                "Slack answered 200 with ok=false (channel_not_found)"
            );
        }
        other => panic!("{other:?}"),
    }
    r.script(
        "/api/chat.postMessage",
        vec![Reply::status(200).body(r#"{"ok":true,"channel":"C1"}"#)],
    );
    assert!(
        send_all(&s, routing::chat_deliveries(&event(Severity::Info), &s)).await[0].delivered()
    );
}

#[tokio::test]
async fn tls_verification_is_skipped_only_where_disable_tls_is_set() {
    let certs = support::generate_certs();
    let r = Receiver::start_https(&certs).await;
    let s = settings(&args());
    let url = r.url("/secure");
    // Untrusted CA: a certificate error, not retried.
    let report = deliver_one(&s, hook(&url)).await;
    assert!(
        matches!(
            report.outcome,
            Outcome::Failed {
                reason: FailureKind::Tls,
                ..
            }
        ),
        "{report}"
    );
    assert_eq!(report.attempts, 1);
    // disableTLS on this webhook only.
    let mut insecure = hook(&url);
    insecure.disable_tls = true;
    assert!(deliver_one(&s, insecure).await.delivered());
    let report = deliver_one(&s, hook(&url)).await;
    assert!(!report.delivered(), "disableTLS leaked to another webhook");
    // Trusting the CA with --ca-file.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let mut a = args();
    a.ca_file = Some(ca);
    assert!(deliver_one(&settings(&a), hook(&url)).await.delivered());
}

#[tokio::test]
async fn per_channel_proxies_carry_chat_requests() {
    let proxy = Receiver::start().await;
    let mut a = args();
    a.slack_url = Some("http://hooks.slack.test/services/T1/B1/X".into());
    a.slack_channel = Some("general".into());
    a.slack_proxy_url = Some(proxy.url(""));
    let s = settings(&a);
    let report = send_all(&s, routing::chat_deliveries(&event(Severity::Info), &s))
        .await
        .remove(0);
    assert!(report.delivered(), "{report}");
    let got = proxy.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uri.path(), "/services/T1/B1/X");
    assert_eq!(got[0].header("host").as_deref(), Some("hooks.slack.test"));
}
