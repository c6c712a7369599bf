//! The admission server over real HTTPS on loopback, HTTP/1.1 and HTTP/2, with
//! reviews shaped like the API server's.

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::{Http, RunningServer, canary, client, generate_certs, review, settings};

struct Fixture {
    server: RunningServer,
    ca: String,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    canary_notifier::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = generate_certs();
    certs.write(dir.path()).unwrap();
    let server = RunningServer::start(settings(dir.path())).await;
    Fixture {
        server,
        ca: certs.ca_pem,
        _dir: dir,
    }
}

async fn post(f: &Fixture, http: Http, path: &str, body: &Value) -> (reqwest::Version, Value) {
    let resp = client(&f.ca, http)
        .post(format!(
            "https://localhost:{}{path}",
            f.server.admission.port()
        ))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let version = resp.version();
    (version, resp.json().await.unwrap())
}

fn event(url: &str) -> Value {
    json!({"name": "events", "type": "event", "url": url, "timeout": "10s"})
}

#[tokio::test]
async fn create_reviews_over_both_http_versions() {
    let f = fixture().await;
    for http in [Http::V1, Http::V2] {
        let want_version = match http {
            Http::V1 => reqwest::Version::HTTP_11,
            Http::V2 => reqwest::Version::HTTP_2,
        };
        // Denied: the exact message names the field and the fix.
        let bad = canary(
            "podinfo",
            json!([event("http://ok.ns/"), event("ftp://files.example.com/x")]),
        );
        let (version, body) = post(
            &f,
            http,
            "/validate",
            &review("uid-1", "CREATE", Some(bad), None, false),
        )
        .await;
        assert_eq!(version, want_version);
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        let r = &body["response"];
        assert_eq!(r["uid"], "uid-1");
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 422);
        assert_eq!(r["status"]["reason"], "Invalid");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(
                "spec.analysis.webhooks[1].url: scheme \"ftp\" is not supported; use http or https"
            ),
            "{message}"
        );
        assert!(
            message.contains("spec.analysis.webhooks[1].name: \"events\" is already used"),
            "{message}"
        );
        assert_eq!(
            r["status"]["details"]["causes"].as_array().unwrap().len(),
            2
        );

        // Allowed with warnings.
        let risky = canary("podinfo", json!([event("https://hooks.example.com/#frag")]));
        let (_, body) = post(
            &f,
            http,
            "/validate",
            &review("uid-2", "CREATE", Some(risky), None, false),
        )
        .await;
        assert_eq!(body["response"]["allowed"], true);
        let warnings = body["response"]["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .as_str()
                .unwrap()
                .starts_with("spec.analysis.webhooks[0].url: has a fragment")
        );
    }
    f.server.stop().await;
}

fn decode_patch(response: &Value) -> json_patch::Patch {
    assert_eq!(response["patchType"], "JSONPatch");
    let b64 = response["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn mutate_then_validate_round_trip() {
    let f = fixture().await;
    let cases = [
        (
            json!([{"type": "event", "url": "http://receiver.ns/"}]),
            true,
        ),
        (
            json!([{"type": "event", "url": "  https://hooks.example.com/x "}, {"name": "lt", "url": "http://lt/"}]),
            true,
        ),
        (
            json!([{"name": "e", "type": "event", "url": "http://a/", "timeout": null}]),
            true,
        ),
        (json!([{"type": "event", "url": "ftp://nope/"}]), false),
        (
            json!([{"type": "event", "url": "http://r/", "retries": 11}]),
            false,
        ),
    ];
    for http in [Http::V1, Http::V2] {
        for (i, (hooks, valid)) in cases.iter().enumerate() {
            let object = canary("podinfo", hooks.clone());
            let uid = format!("m-{i}");
            let (_, body) = post(
                &f,
                http,
                "/mutate",
                &review(&uid, "CREATE", Some(object.clone()), None, false),
            )
            .await;
            let r = &body["response"];
            assert_eq!(r["uid"], uid.as_str());
            assert_eq!(r["allowed"], true, "mutate never denies");
            let patch = decode_patch(r);
            let mut patched = object.clone();
            json_patch::patch(&mut patched, &patch).unwrap();
            // Fields we do not model come back untouched.
            assert_eq!(patched["metadata"], object["metadata"]);
            assert_eq!(patched["spec"]["service"], object["spec"]["service"]);
            for hook in patched["spec"]["analysis"]["webhooks"].as_array().unwrap() {
                if hook["type"] == "event" {
                    assert!(
                        hook["timeout"].is_string() && hook["name"].is_string(),
                        "{hook}"
                    );
                }
            }
            let (_, body) = post(
                &f,
                http,
                "/validate",
                &review(&uid, "CREATE", Some(patched.clone()), None, false),
            )
            .await;
            assert_eq!(body["response"]["allowed"], *valid, "{hooks}: {body}");
            // A second mutation of the patched object changes nothing.
            let (_, body) = post(
                &f,
                http,
                "/mutate",
                &review(&uid, "UPDATE", Some(patched.clone()), Some(patched), false),
            )
            .await;
            assert!(body["response"].get("patch").is_none(), "{body}");
        }
    }
    f.server.stop().await;
}

#[tokio::test]
async fn update_ratchets_pre_existing_problems() {
    let f = fixture().await;
    let old = canary("podinfo", json!([event("ftp://legacy.example.com/")]));
    // Flagger adding an annotation: the old problem is a warning, not a denial.
    let mut new = old.clone();
    new["metadata"]["annotations"]["flagger.app/last-applied"] = json!("abc");
    let (_, body) = post(
        &f,
        Http::V1,
        "/validate",
        &review("u-1", "UPDATE", Some(new.clone()), Some(old.clone()), false),
    )
    .await;
    let r = &body["response"];
    assert_eq!(r["allowed"], true, "{body}");
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with("spec.analysis.webhooks[0].url: scheme \"ftp\""),
        "{warning}"
    );
    assert!(
        warning.contains("already present before this update"),
        "{warning}"
    );

    // A new problem is denied, and only it is listed as an error.
    let mut worse = new.clone();
    worse["spec"]["analysis"]["webhooks"][0]["retries"] = json!(-1);
    let (_, body) = post(
        &f,
        Http::V1,
        "/validate",
        &review("u-2", "UPDATE", Some(worse), Some(old.clone()), false),
    )
    .await;
    let r = &body["response"];
    assert_eq!(r["allowed"], false);
    assert_eq!(
        r["status"]["message"],
        "spec.analysis.webhooks[0].retries: -1 is out of range; use a number from 0 to 10"
    );

    // Changing the bad value to another bad value is a new problem.
    let mut changed = old.clone();
    changed["spec"]["analysis"]["webhooks"][0]["url"] = json!("gopher://legacy.example.com/");
    let (_, body) = post(
        &f,
        Http::V1,
        "/validate",
        &review("u-3", "UPDATE", Some(changed), Some(old), false),
    )
    .await;
    assert_eq!(body["response"]["allowed"], false);
    f.server.stop().await;
}

#[tokio::test]
async fn dry_run_and_untouched_requests() {
    let f = fixture().await;
    let bad = canary("podinfo", json!([event("ftp://x/")]));
    let (_, real) = post(
        &f,
        Http::V1,
        "/validate",
        &review("same", "CREATE", Some(bad.clone()), None, false),
    )
    .await;
    let (_, dry) = post(
        &f,
        Http::V1,
        "/validate",
        &review("same", "CREATE", Some(bad.clone()), None, true),
    )
    .await;
    assert_eq!(real, dry, "dryRun is answered exactly like a real review");

    // DELETE and CONNECT: allowed untouched, whatever the object holds.
    for op in ["DELETE", "CONNECT"] {
        for path in ["/mutate", "/validate"] {
            let (_, body) = post(
                &f,
                Http::V1,
                path,
                &review("d", op, None, Some(bad.clone()), false),
            )
            .await;
            assert_eq!(body["response"]["allowed"], true, "{op} {path}");
            assert!(body["response"].get("patch").is_none());
        }
    }
    // Another kind, and the status subresource: allowed untouched.
    let mut pod = review(
        "p",
        "CREATE",
        Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})),
        None,
        false,
    );
    pod["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    let mut status = review("s", "UPDATE", Some(bad.clone()), Some(bad.clone()), false);
    status["request"]["subResource"] = json!("status");
    let missing_timeout = canary(
        "podinfo",
        json!([{"name": "e", "type": "event", "url": "ftp://x/"}]),
    );
    let mut status_mutate = review(
        "s2",
        "UPDATE",
        Some(missing_timeout.clone()),
        Some(missing_timeout),
        false,
    );
    status_mutate["request"]["subResource"] = json!("status");
    for (path, body) in [
        ("/validate", &pod),
        ("/mutate", &pod),
        ("/validate", &status),
        ("/mutate", &status_mutate),
    ] {
        let (_, resp) = post(&f, Http::V2, path, body).await;
        assert_eq!(resp["response"]["allowed"], true, "{path}: {resp}");
        assert!(resp["response"].get("patch").is_none());
        assert_eq!(resp["response"]["uid"], body["request"]["uid"]);
    }
    // A CREATE without an object cannot be judged: denied with a reason.
    let (_, body) = post(
        &f,
        Http::V1,
        "/validate",
        &review("n", "CREATE", None, None, false),
    )
    .await;
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("request.object: is missing")
    );
    f.server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_plain_http_errors() {
    let f = fixture().await;
    let valid = review(
        "ok",
        "CREATE",
        Some(canary("podinfo", json!([]))),
        None,
        false,
    );
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = valid.clone();
        edit(&mut v);
        v.to_string().into_bytes()
    };
    let big = vec![b' '; 64 * 1024 + 1];
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/validate", b"{".to_vec(), 400, "not valid JSON"),
        ("POST", "/validate", Vec::new(), 400, "not valid JSON"),
        (
            "POST",
            "/mutate",
            b"\xff\xfe\x00garbage".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/validate",
            b"[]".to_vec(),
            400,
            "expected kind AdmissionReview",
        ),
        (
            "POST",
            "/validate",
            b"{}".to_vec(),
            400,
            "expected kind AdmissionReview",
        ),
        (
            "POST",
            "/validate",
            b"null".to_vec(),
            400,
            "expected kind AdmissionReview",
        ),
        ("POST", "/validate", deep, 400, "not valid JSON"),
        (
            "POST",
            "/validate",
            with(&|v| v["apiVersion"] = json!("admission.k8s.io/v1beta1")),
            400,
            "version \"admission.k8s.io/v1beta1\" is not supported",
        ),
        (
            "POST",
            "/validate",
            with(&|v| v["kind"] = json!("AdmissionRequest")),
            400,
            "expected kind AdmissionReview",
        ),
        (
            "POST",
            "/validate",
            with(&|v| {
                v.as_object_mut().unwrap().remove("request");
            }),
            400,
            "has no request",
        ),
        (
            "POST",
            "/mutate",
            with(&|v| v["request"] = Value::Null),
            400,
            "has no request",
        ),
        (
            "POST",
            "/validate",
            with(&|v| {
                v["request"].as_object_mut().unwrap().remove("uid");
            }),
            400,
            "malformed",
        ),
        (
            "POST",
            "/validate",
            with(&|v| v["request"]["kind"] = json!("Canary")),
            400,
            "malformed",
        ),
        (
            "POST",
            "/validate",
            with(&|v| v["request"]["operation"] = json!("PATCH")),
            400,
            "malformed",
        ),
        (
            "POST",
            "/validate",
            with(&|v| v["request"]["object"] = json!("a string")),
            400,
            "malformed",
        ),
        (
            "POST",
            "/validate",
            with(&|v| v["request"]["userInfo"] = json!([1])),
            400,
            "malformed",
        ),
        (
            "POST",
            "/validate",
            big,
            413,
            "exceeds the 65536 byte limit",
        ),
        ("GET", "/validate", Vec::new(), 405, ""),
        ("PUT", "/mutate", b"{}".to_vec(), 405, ""),
        ("DELETE", "/validate", Vec::new(), 405, ""),
        (
            "POST",
            "/",
            Vec::new(),
            404,
            "use POST /mutate or POST /validate",
        ),
        ("POST", "/validate/extra", Vec::new(), 404, "not found"),
        ("GET", "/healthz", Vec::new(), 404, "not found"),
    ];
    assert!(cases.len() >= 15);
    let http = client(&f.ca, Http::V1);
    for (method, path, body, status, want) in cases {
        let resp = http
            .request(
                method.parse().unwrap(),
                format!("https://localhost:{}{path}", f.server.admission.port()),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let text = resp.text().await.unwrap();
        assert!(
            text.contains(want),
            "{method} {path}: {text:?} lacks {want:?}"
        );
    }
    // Still serving normally afterwards.
    let (_, body) = post(&f, Http::V1, "/validate", &valid).await;
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(f.server.readyz().await, 200);
    let metrics = reqwest::get(format!("http://{}/metrics", f.server.ops))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(r#"canary_notifier_admission_reviews_total{endpoint="validate",operation="unknown",result="bad_request"}"#), "{metrics}");
    assert!(metrics.contains(r#"canary_notifier_admission_reviews_total{endpoint="validate",operation="CREATE",result="allowed"} 1"#), "{metrics}");
    assert!(metrics.contains("canary_notifier_admission_review_duration_seconds_bucket"));
    f.server.stop().await;
}

#[tokio::test]
async fn plain_http_and_untrusted_clients_are_refused() {
    let f = fixture().await;
    // Plain HTTP to the TLS port never gets an answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain
            .post(format!(
                "http://127.0.0.1:{}/validate",
                f.server.admission.port()
            ))
            .send()
            .await
            .is_err()
    );
    // A client trusting another CA fails the handshake.
    let other = generate_certs();
    assert!(
        support::served_leaf(f.server.admission, &other.ca_pem)
            .await
            .is_err()
    );
    f.server.stop().await;
}
