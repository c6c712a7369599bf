//! Proves the fake API server (tests/support/fake_api.rs) behaves like a real
//! kube-apiserver for the real kube client, kube-runtime and kube-lease-manager.

#[path = "support/fake_api.rs"]
mod fake_api;

use fake_api::{FakeApi, Resource};
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Config, Resource as _, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

fn canary_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary"),
        "canaries",
    )
}

fn canary(name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
    })
}

fn dynamic(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

/// A started fake with the usual resources and a client built the way the
/// operator builds it: from the kubeconfig file the fake writes.
async fn setup() -> (FakeApi, Client, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = FakeApi::start().await;
    for r in [
        Resource::canaries(),
        Resource::events(),
        Resource::events_v1(),
        Resource::leases(),
        Resource::secrets(),
    ] {
        api.register(r);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.to_string(), format!("{}/", api.url()));
    assert_eq!(config.default_namespace, "default");
    // A proxy from the environment must not capture loopback traffic.
    config.proxy_url = None;
    (api, Client::try_from(config).unwrap(), dir)
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The next item of a watcher stream, within [`WAIT`].
async fn next<S, K>(stream: &mut S) -> Result<watcher::Event<K>, watcher::Error>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watcher event in time")
        .expect("the watcher stream never ends")
}

/// Describes a watcher event as `Kind(name)` for compact assertions.
fn describe(event: &watcher::Event<DynamicObject>) -> String {
    match event {
        watcher::Event::Init => "Init".into(),
        watcher::Event::InitApply(o) => format!("InitApply({})", o.name_any()),
        watcher::Event::InitDone => "InitDone".into(),
        watcher::Event::Apply(o) => format!("Apply({})", o.name_any()),
        watcher::Event::Delete(o) => format!("Delete({})", o.name_any()),
    }
}

async fn next_ok<S>(stream: &mut S) -> String
where
    S: Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Unpin,
{
    describe(&next(stream).await.expect("no watcher error"))
}

#[tokio::test]
async fn canary_create_get_list_delete() {
    let (fake, client, _dir) = setup().await;
    let ar = canary_resource();
    let canaries: Api<DynamicObject> = Api::namespaced_with(client.clone(), "test", &ar);

    let created = canaries
        .create(&PostParams::default(), &dynamic(canary("podinfo", "test")))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_ref().is_some_and(|u| u.len() == 36));
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("test"));
    let rv: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    assert_eq!(rv, fake.resource_version());
    let stored = fake
        .get(&Resource::canaries(), Some("test"), "podinfo")
        .unwrap();
    let created_at = stored["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == 20,
        "{created_at}"
    );

    let got = canaries.get("podinfo").await.unwrap();
    assert_eq!(got.metadata.uid, meta.uid);
    assert_eq!(got.data["spec"]["targetRef"]["name"], "podinfo");

    fake.upsert(&Resource::canaries(), canary("other", "prod"));
    let in_test = canaries.list(&ListParams::default()).await.unwrap();
    assert_eq!(in_test.items.len(), 1);
    assert_eq!(
        in_test.metadata.resource_version,
        Some(fake.resource_version().to_string())
    );
    let everywhere: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let all = everywhere.list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = all.items.iter().map(|o| o.name_any()).collect();
    assert_eq!(names, ["other", "podinfo"]);
    let selected = everywhere
        .list(&ListParams::default().labels("app=other"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let by_name = everywhere
        .list(&ListParams::default().fields("metadata.name=podinfo"))
        .await
        .unwrap();
    assert_eq!(by_name.items[0].name_any(), "podinfo");
    let metadata_only = everywhere
        .list_metadata(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(metadata_only.items.len(), 2);

    let again = canaries
        .create(&PostParams::default(), &dynamic(canary("podinfo", "test")))
        .await
        .unwrap_err();
    let status = api_error(again);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );

    let mut generated = canary("", "test");
    generated["metadata"] = json!({"generateName": "gen-"});
    let generated = canaries
        .create(&PostParams::default(), &dynamic(generated))
        .await
        .unwrap();
    let name = generated.name_any();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    canaries
        .delete("podinfo", &DeleteParams::default())
        .await
        .unwrap();
    let status = api_error(canaries.get("podinfo").await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        status.message,
        r#"canaries.flagger.app "podinfo" not found"#
    );
    assert!(
        fake.get(&Resource::canaries(), Some("test"), "podinfo")
            .is_none()
    );
}

#[tokio::test]
async fn watcher_follows_changes_and_relists_after_expiry() {
    let (fake, client, _dir) = setup().await;
    let res = Resource::canaries();
    fake.upsert(&res, canary("a", "test"));
    let api: Api<DynamicObject> = Api::all_with(client, &canary_resource());
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    assert_eq!(next_ok(&mut stream).await, "Init");
    assert_eq!(next_ok(&mut stream).await, "InitApply(a)");
    assert_eq!(next_ok(&mut stream).await, "InitDone");

    fake.upsert(&res, canary("b", "test"));
    assert_eq!(next_ok(&mut stream).await, "Apply(b)");
    let mut b = fake.get(&res, Some("test"), "b").unwrap();
    b["status"] = json!({"phase": "Progressing"});
    fake.upsert(&res, b);
    match next(&mut stream).await.unwrap() {
        watcher::Event::Apply(o) => assert_eq!(o.data["status"]["phase"], "Progressing"),
        other => panic!("expected MODIFIED b, got {}", describe(&other)),
    }
    fake.delete(&res, Some("test"), "b");
    assert_eq!(next_ok(&mut stream).await, "Delete(b)");
    eventually("the watch is open", || fake.open_watches() == 1).await;

    // Compaction: the open watch fails with 410 and the watcher lists again.
    fake.expire_watches();
    let err = next(&mut stream).await.unwrap_err();
    assert!(
        matches!(&err, watcher::Error::WatchError(s) if s.code == 410 && s.reason == "Expired"),
        "{err:?}"
    );
    assert_eq!(next_ok(&mut stream).await, "Init");
    assert_eq!(next_ok(&mut stream).await, "InitApply(a)");
    assert_eq!(next_ok(&mut stream).await, "InitDone");
    fake.upsert(&res, canary("c", "test"));
    assert_eq!(next_ok(&mut stream).await, "Apply(c)");

    // The raw API: a watch from before the compaction gets 410 at once.
    let raw: Api<DynamicObject> = Api::all_with(fake.client(), &canary_resource());
    let mut old = raw
        .watch(&WatchParams::default(), "2")
        .await
        .unwrap()
        .boxed();
    match old.next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(old.next().await.is_none());

    // Bookmarks carry the current resourceVersion.
    let mut live = raw
        .watch(
            &WatchParams::default().timeout(3),
            &fake.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    fake.upsert(&res, canary("d", "test"));
    assert!(
        matches!(live.next().await.unwrap().unwrap(), WatchEvent::Added(o) if o.name_any() == "d")
    );
    match live.next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(bm) => {
            assert_eq!(
                bm.metadata.resource_version,
                fake.resource_version().to_string()
            )
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn label_selected_watch_sees_objects_enter_and_leave() {
    let (fake, client, _dir) = setup().await;
    let res = Resource::canaries();
    let api: Api<DynamicObject> = Api::namespaced_with(client, "test", &canary_resource());
    let mut stream = api
        .watch(&WatchParams::default().labels("tier=web"), "0")
        .await
        .unwrap()
        .boxed();
    let mut obj = canary("x", "test");
    fake.upsert(&res, obj.clone()); // not selected: nothing
    obj["metadata"]["labels"]["tier"] = json!("web");
    fake.upsert(&res, obj.clone());
    assert!(matches!(
        stream.next().await.unwrap().unwrap(),
        WatchEvent::Added(_)
    ));
    obj["metadata"]["labels"]["tier"] = json!("db");
    fake.upsert(&res, obj);
    assert!(matches!(
        stream.next().await.unwrap().unwrap(),
        WatchEvent::Deleted(_)
    ));
}

#[tokio::test]
async fn server_side_apply_merges_owns_and_checks_preconditions() {
    let (fake, client, _dir) = setup().await;
    let res = Resource::canaries();
    let mut seeded = canary("podinfo", "test");
    seeded["status"] = json!({"phase": "Initialized"});
    fake.upsert(&res, seeded);
    let api: Api<DynamicObject> = Api::namespaced_with(client, "test", &canary_resource());
    fake.clear_requests();

    let body = json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "annotations": {"canary-notifier.dev/notified": "{\"phase\":\"Initialized\"}"}},
    });
    let applied = api
        .patch(
            "podinfo",
            &PatchParams::apply("canary-notifier").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.annotations()["canary-notifier.dev/notified"],
        "{\"phase\":\"Initialized\"}"
    );
    assert_eq!(applied.labels()["app"], "podinfo");
    assert_eq!(applied.data["spec"]["targetRef"]["name"], "podinfo");
    assert_eq!(applied.data["status"]["phase"], "Initialized");
    assert_eq!(applied.metadata.generation, Some(1), "metadata only");
    assert!(applied.metadata.managed_fields.is_none());
    let log = fake.requests();
    let patch = log.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(
        patch.path,
        "/apis/flagger.app/v1beta1/namespaces/test/canaries/podinfo"
    );
    assert_eq!(
        patch.param("fieldManager").as_deref(),
        Some("canary-notifier")
    );
    assert_eq!(patch.param("force").as_deref(), Some("true"));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(patch.json()["metadata"]["name"], "podinfo");

    // The same apply again changes nothing: no new resourceVersion.
    let rv = fake.resource_version();
    api.patch(
        "podinfo",
        &PatchParams::apply("canary-notifier").force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap();
    assert_eq!(fake.resource_version(), rv);

    // A resourceVersion precondition that is stale is a conflict.
    let mut stale = body.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let status = api_error(
        api.patch(
            "podinfo",
            &PatchParams::apply("canary-notifier").force(),
            &Patch::Apply(&stale),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    // Another manager changing an owned field conflicts unless it forces.
    let mut other = body.clone();
    other["metadata"]["annotations"]["canary-notifier.dev/notified"] = json!("{}");
    let status = api_error(
        api.patch(
            "podinfo",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("canary-notifier"),
        "{}",
        status.message
    );
    let forced = api
        .patch(
            "podinfo",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.annotations()["canary-notifier.dev/notified"], "{}");

    // Without fieldManager, apply is rejected.
    let status = api_error(
        api.patch("podinfo", &PatchParams::default(), &Patch::Apply(&body))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 400);

    // A manager that stops applying a field it alone owns removes it.
    let mine = json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "labels": {"owned-by": "me"}},
    });
    let pp = PatchParams::apply("labeller");
    let with = api
        .patch("podinfo", &pp, &Patch::Apply(&mine))
        .await
        .unwrap();
    assert_eq!(with.labels()["owned-by"], "me");
    let without = json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"}});
    let without = api
        .patch("podinfo", &pp, &Patch::Apply(&without))
        .await
        .unwrap();
    assert!(!without.labels().contains_key("owned-by"));
    assert_eq!(without.labels()["app"], "podinfo");

    // Status goes through /status only; apply creates missing objects.
    let status_body = json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                             "metadata": {"name": "podinfo"}, "status": {"phase": "Progressing"}});
    let ignored = api
        .patch(
            "podinfo",
            &PatchParams::apply("x").force(),
            &Patch::Apply(&status_body),
        )
        .await
        .unwrap();
    assert_eq!(ignored.data["status"]["phase"], "Initialized");
    let updated = api
        .patch_status(
            "podinfo",
            &PatchParams::apply("x").force(),
            &Patch::Apply(&status_body),
        )
        .await
        .unwrap();
    assert_eq!(updated.data["status"]["phase"], "Progressing");
    let new = api
        .patch(
            "fresh",
            &PatchParams::apply("x"),
            &Patch::Apply(&canary("fresh", "test")),
        )
        .await
        .unwrap();
    assert_eq!(new.metadata.generation, Some(1));
    assert!(fake.get(&res, Some("test"), "fresh").is_some());
}

#[tokio::test]
async fn merge_json_patch_and_replace() {
    let (fake, client, _dir) = setup().await;
    let res = Resource::canaries();
    fake.upsert(&res, canary("podinfo", "test"));
    let api: Api<DynamicObject> = Api::namespaced_with(client, "test", &canary_resource());

    let merged = api
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": null, "team": "a"}}, "spec": {"skipAnalysis": true}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.labels().len(), 1);
    assert_eq!(merged.labels()["team"], "a");
    assert_eq!(merged.data["spec"]["skipAnalysis"], true);
    assert_eq!(merged.metadata.generation, Some(2), "spec changed");

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/spec/progressDeadlineSeconds", "value": 60},
        {"op": "remove", "path": "/spec/skipAnalysis"},
    ]))
    .unwrap();
    let patched = api
        .patch("podinfo", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["progressDeadlineSeconds"], 60);
    assert!(patched.data["spec"].get("skipAnalysis").is_none());
    let failing: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/spec/progressDeadlineSeconds", "value": 1}]),
    )
    .unwrap();
    let status = api_error(
        api.patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::<()>::Json(failing),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status.code, 422);

    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}});
    let status = api_error(
        api.patch("podinfo", &PatchParams::default(), &Patch::Merge(&stale))
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let missing = api_error(
        api.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(missing.code, 404);

    // PUT: optimistic concurrency; status only through /status.
    let mut current = api.get("podinfo").await.unwrap();
    current.data["spec"]["skipAnalysis"] = json!(false);
    current.data["status"] = json!({"phase": "Ignored"});
    let replaced = api
        .replace("podinfo", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(replaced.data["spec"]["skipAnalysis"], false);
    assert!(replaced.data.get("status").is_none());
    let status = api_error(
        api.replace("podinfo", &PostParams::default(), &current)
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let mut with_status = replaced.clone();
    with_status.data["status"] = json!({"phase": "Succeeded"});
    let after = api
        .replace_status("podinfo", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(after.data["status"]["phase"], "Succeeded");
    assert_eq!(after.metadata.generation, replaced.metadata.generation);
    let merged_status = api
        .patch_status(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"canaryWeight": 10}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged_status.data["status"],
        json!({"phase": "Succeeded", "canaryWeight": 10})
    );
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let (fake, client, _dir) = setup().await;
    let res = Resource::canaries();
    let mut obj = canary("held", "test");
    obj["metadata"]["finalizers"] = json!(["canary-notifier.dev/cleanup"]);
    fake.upsert(&res, obj);
    let api: Api<DynamicObject> = Api::namespaced_with(client, "test", &canary_resource());
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = api.get("held").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(api.get("held").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn core_events_filter_by_involved_object() {
    let (fake, client, _dir) = setup().await;
    let event = |name: &str, kind: &str, object: &str| {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "test"},
            "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": kind, "name": object, "namespace": "test"},
            "reason": "Synced", "message": format!("{name} happened"), "type": "Normal", "count": 1,
            "source": {"component": "flagger"},
        })
    };
    fake.upsert(&Resource::events(), event("a.1", "Canary", "podinfo"));
    fake.upsert(&Resource::events(), event("b.1", "Canary", "other"));
    fake.upsert(&Resource::events(), event("c.1", "Deployment", "podinfo"));

    let all: Api<CoreEvent> = Api::all(client.clone());
    let canary_events = all
        .list(&ListParams::default().fields("involvedObject.kind=Canary"))
        .await
        .unwrap();
    let names: Vec<String> = canary_events.items.iter().map(|e| e.name_any()).collect();
    assert_eq!(names, ["a.1", "b.1"]);
    assert_eq!(
        canary_events.items[0].message.as_deref(),
        Some("a.1 happened")
    );
    assert_eq!(canary_events.items[0].count, Some(1));
    let one = all
        .list(
            &ListParams::default().fields("involvedObject.kind=Canary,involvedObject.name=podinfo"),
        )
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    let not_canary = all
        .list(&ListParams::default().fields("involvedObject.kind!=Canary"))
        .await
        .unwrap();
    assert_eq!(not_canary.items[0].name_any(), "c.1");
    let status = api_error(
        all.list(&ListParams::default().fields("spec.nothing=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 400);

    // The same store seen through events.k8s.io/v1.
    let v1: Api<EventV1> = Api::namespaced(client.clone(), "test");
    let converted = v1.get("a.1").await.unwrap();
    assert_eq!(converted.note.as_deref(), Some("a.1 happened"));
    assert_eq!(converted.regarding.unwrap().kind.as_deref(), Some("Canary"));

    // A reflector with the operator's field selector sees only Canary events.
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::reflector(
        writer,
        watcher(
            all,
            watcher::Config::default().fields("involvedObject.kind=Canary"),
        ),
    );
    let task = tokio::spawn(stream.for_each(|_| async {}));
    fake.upsert(&Resource::events(), event("d.1", "Canary", "podinfo"));
    fake.upsert(&Resource::events(), event("e.1", "Deployment", "podinfo"));
    eventually("d.1 in the store", || reader.state().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut names: Vec<String> = reader.state().iter().map(|e| e.name_any()).collect();
    names.sort();
    assert_eq!(names, ["a.1", "b.1", "d.1"]);
    task.abort();
}

#[tokio::test]
async fn leases_through_server_side_apply() {
    let (fake, client, _dir) = setup().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let spec = |holder: &str| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3,
                     "acquireTime": "2025-01-01T00:00:00.000000Z", "renewTime": "2025-01-01T00:00:00.000000Z"},
        })
    };
    // What kube-lease-manager does: apply (not forced) to lock, strategic
    // merge to renew and release.
    let a = PatchParams::apply("kube-lease-manager-a");
    let b = PatchParams::apply("kube-lease-manager-b");
    let locked = leases
        .patch("leader", &a, &Patch::Apply(spec("a")))
        .await
        .unwrap();
    assert_eq!(locked.spec.unwrap().holder_identity.as_deref(), Some("a"));
    let renew = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "spec": {"renewTime": "2025-01-01T00:00:01.000000Z"}});
    let renewed = leases
        .patch("leader", &a, &Patch::Strategic(renew))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(renewed.spec.unwrap().renew_time).unwrap(),
        json!("2025-01-01T00:00:01.000000Z")
    );
    let status = api_error(
        leases
            .patch("leader", &b, &Patch::Apply(spec("b")))
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let release = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "spec": {"holderIdentity": null, "acquireTime": null, "renewTime": null, "leaseDurationSeconds": null}});
    leases
        .patch("leader", &a, &Patch::Strategic(release))
        .await
        .unwrap();
    let relocked = leases
        .patch("leader", &b, &Patch::Apply(spec("b")))
        .await
        .unwrap();
    assert_eq!(relocked.spec.unwrap().holder_identity.as_deref(), Some("b"));
    assert!(
        fake.field_managers(&Resource::leases(), Some("default"), "leader")
            .contains(&("kube-lease-manager-b".into(), "Apply".into()))
    );

    // The crate itself: of two managers racing for a new lease, one wins.
    let manager = |id: &str| {
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "race")
            .with_namespace("default")
            .with_identity(id)
            .with_duration(5)
            .with_grace(1)
            .build()
    };
    let (m1, m2) = (manager("one").await.unwrap(), manager("two").await.unwrap());
    let race = |m: kube_lease_manager::LeaseManager| async move {
        tokio::time::timeout(Duration::from_millis(1500), m.changed())
            .await
            .ok()
            .map(Result::unwrap)
    };
    let (r1, r2) = tokio::join!(race(m1), race(m2));
    let leaders = [r1, r2].iter().filter(|r| **r == Some(true)).count();
    assert_eq!(leaders, 1, "{r1:?} {r2:?}");
    let holder = fake
        .get(&Resource::leases(), Some("default"), "race")
        .unwrap();
    let expected = if r1 == Some(true) { "one" } else { "two" };
    assert_eq!(holder["spec"]["holderIdentity"], expected);
}

#[tokio::test]
async fn unregistered_resources_are_not_found() {
    let (fake, client, _dir) = setup().await;
    let widgets = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &widgets);
    let status = api_error(api.list(&ListParams::default().limit(1)).await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));

    // Objects can be staged before the "CRD" is installed.
    let res = Resource::new("example.com", "v1", "Widget", "widgets", false);
    fake.upsert(&res, json!({"metadata": {"name": "w"}, "spec": {}}));
    assert_eq!(api_error(api.get("w").await.unwrap_err()).code, 404);
    fake.register(res.clone());
    assert_eq!(api.get("w").await.unwrap().name_any(), "w");
    fake.unregister(&res);
    assert_eq!(api_error(api.get("w").await.unwrap_err()).code, 404);

    let unknown = api_error(
        Api::<DynamicObject>::namespaced_with(client.clone(), "default", &widgets)
            .get("w")
            .await
            .unwrap_err(),
    );
    assert_eq!(unknown.code, 404);

    // Discovery reflects what is registered.
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "flagger.app"));
    let resources = client
        .list_api_group_resources("flagger.app/v1beta1")
        .await
        .unwrap();
    assert!(resources.resources.iter().any(|r| r.name == "canaries"));
    assert!(client.apiserver_version().await.is_ok());
}

#[tokio::test]
async fn recorder_publishes_events_and_series() {
    let (fake, client, _dir) = setup().await;
    let res = Resource::canaries();
    let stored = fake.upsert(&res, canary("podinfo", "test"));
    let obj = dynamic(stored);
    let reference: ObjectReference = obj.object_ref(&canary_resource());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "canary-notifier".into(),
            instance: Some("pod-1".into()),
        },
    );
    let event = RecordedEvent {
        type_: EventType::Warning,
        reason: "EventWebhookRejected".into(),
        note: Some("the URL is link-local".into()),
        action: "Notify".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();

    let events = fake.list(&Resource::events_v1());
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["reason"], "EventWebhookRejected");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["note"], "the URL is link-local");
    assert_eq!(e["regarding"]["kind"], "Canary");
    assert_eq!(e["reportingController"], "canary-notifier");
    assert_eq!(e["series"]["count"], 2);
    let methods: Vec<(String, Option<String>)> = fake
        .requests()
        .into_iter()
        .filter(|r| {
            r.path
                .starts_with("/apis/events.k8s.io/v1/namespaces/test/events")
        })
        .map(|r| (r.method, r.content_type))
        .collect();
    assert_eq!(methods[0].0, "POST");
    assert_eq!(
        methods[1],
        ("PATCH".into(), Some("application/merge-patch+json".into()))
    );

    // A real cluster also serves it as a core/v1 Event.
    let core = fake.list(&Resource::events());
    assert_eq!(core[0]["involvedObject"]["name"], "podinfo");
    assert_eq!(core[0]["message"], "the URL is link-local");
    assert_eq!(core[0]["reportingComponent"], "canary-notifier");
}

#[derive(Debug)]
struct Never;
impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
impl std::error::Error for Never {}

#[tokio::test]
async fn a_controller_reconciles_through_the_fake() {
    let (fake, client, _dir) = setup().await;
    let res = Resource::canaries();
    fake.upsert(&res, canary("podinfo", "test"));
    let ar = canary_resource();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);

    struct Ctx {
        client: Client,
        ar: ApiResource,
    }
    // Records the generation it saw in an annotation, with server-side apply.
    async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Never> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &obj.namespace().unwrap(), &ctx.ar);
        let body = json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": obj.name_any(), "annotations": {
                "seen-generation": obj.metadata.generation.unwrap_or_default().to_string()}},
        });
        api.patch(
            &obj.name_any(),
            &PatchParams::apply("selftest").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<DynamicObject>, _: &Never, _: Arc<Ctx>) -> Action {
        Action::await_change()
    }
    let ctx = Arc::new(Ctx {
        client,
        ar: ar.clone(),
    });
    let controller = Controller::new_with(api, watcher::Config::default(), ar)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    let seen = |fake: &FakeApi| {
        fake.get(&Resource::canaries(), Some("test"), "podinfo")
            .and_then(|c| {
                c["metadata"]["annotations"]["seen-generation"]
                    .as_str()
                    .map(str::to_string)
            })
    };
    eventually("generation 1 reconciled", || {
        seen(&fake).as_deref() == Some("1")
    })
    .await;
    let mut c = fake.get(&res, Some("test"), "podinfo").unwrap();
    c["spec"]["skipAnalysis"] = json!(true);
    fake.upsert(&res, c);
    eventually("generation 2 reconciled", || {
        seen(&fake).as_deref() == Some("2")
    })
    .await;
    // The controller's own no-op applies do not loop: the version settles.
    let rv = fake.resource_version();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.resource_version(), rv);
    task.abort();
}

#[tokio::test]
async fn a_down_server_answers_503_and_comes_back() {
    let (fake, client, _dir) = setup().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s"}, "stringData": {"token": "abc"}
    }))
    .unwrap();
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["token"].0, b"abc");

    let api: Api<DynamicObject> = Api::all_with(client.clone(), &canary_resource());
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    eventually("the watch is open", || fake.open_watches() == 1).await;
    fake.set_down(true);
    assert!(stream.next().await.is_none(), "open watches are closed");

    // kube's default client retries 503s with backoff: the request waits out
    // the outage. Without retries, the 503 Status surfaces.
    let waiting = tokio::spawn({
        let secrets = secrets.clone();
        async move { secrets.get("s").await }
    });
    let mut config = kube::Config::new(fake.url().parse().unwrap());
    config.default_retry = false;
    let no_retry: Api<Secret> = Api::namespaced(Client::try_from(config).unwrap(), "default");
    let status = api_error(no_retry.get("s").await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str()),
        (503, "ServiceUnavailable")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.set_down(false);
    let got = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(got.unwrap().name_any(), "s");
    assert!(no_retry.get("s").await.is_ok());
    let gets = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/namespaces/default/secrets/s")
        .count();
    assert!(gets >= 4, "{gets}");
}

#[tokio::test]
async fn bad_input_gets_a_status_never_a_panic() {
    let (fake, _client, _dir) = setup().await;
    fake.upsert(&Resource::canaries(), canary("podinfo", "test"));
    let http = reqwest::Client::new();
    let base = format!("{}/apis/flagger.app/v1beta1", fake.url());
    let one = format!("{base}/namespaces/test/canaries/podinfo");
    let send = |method: &str, url: &str, content_type: &str, body: &str| {
        http.request(method.parse().unwrap(), url)
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
    };
    let cases = [
        (
            "POST",
            format!("{base}/namespaces/test/canaries"),
            "application/json",
            "{not json",
            400,
        ),
        (
            "POST",
            format!("{base}/namespaces/test/canaries"),
            "application/json",
            "[1]",
            400,
        ),
        ("PATCH", one.clone(), "text/plain", "{}", 415),
        (
            "PATCH",
            one.clone(),
            "application/json-patch+json",
            "{\"op\":1}",
            400,
        ),
        (
            "PATCH",
            one.clone(),
            "application/merge-patch+json",
            "\"x\"",
            422,
        ),
        (
            "GET",
            format!("{base}/canaries?labelSelector=a+in+(b"),
            "",
            "",
            400,
        ),
        (
            "GET",
            format!("{base}/canaries?watch=true&resourceVersion=abc"),
            "",
            "",
            400,
        ),
        ("GET", format!("{base}/canaries/podinfo"), "", "", 404),
        (
            "GET",
            format!("{base}/namespaces/test/canaries/podinfo/scale"),
            "",
            "",
            404,
        ),
        ("OPTIONS", one.clone(), "", "", 405),
        ("POST", one.clone(), "application/json", "{}", 405),
        (
            "GET",
            format!("{}/apis/nope/v1/things", fake.url()),
            "",
            "",
            404,
        ),
    ];
    for (method, url, content_type, body, code) in cases {
        let response = send(method, &url, content_type, body).await.unwrap();
        assert_eq!(response.status().as_u16(), code, "{method} {url} {body}");
        let status: Value = response.json().await.unwrap();
        assert_eq!(status["kind"], "Status", "{method} {url}");
        assert_eq!(status["code"], code);
    }
    // kubectl sends YAML apply configurations.
    let yaml = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  labels:\n    from: yaml\n";
    let response = send(
        "PATCH",
        &format!("{one}?fieldManager=kubectl"),
        "application/apply-patch+yaml",
        yaml,
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let stored = fake
        .get(&Resource::canaries(), Some("test"), "podinfo")
        .unwrap();
    assert_eq!(stored["metadata"]["labels"]["from"], "yaml");
}
