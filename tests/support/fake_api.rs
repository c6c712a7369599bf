//! A loopback fake kube-apiserver for integration tests.
//!
//! It speaks the real Kubernetes REST paths and JSON (objects, lists, `Status`
//! errors, chunked watch streams with bookmarks and `410 Gone`), so the real
//! kube-rs client, kube-runtime's watcher/reflector/Controller, its events
//! `Recorder` and kube-lease-manager can run against it unchanged. Plain HTTP on
//! 127.0.0.1, in-process, no TLS and no authentication.
//!
//! Behaviour worth knowing when writing tests:
//! - One global resourceVersion counter; a write that changes nothing (same
//!   content) is a no-op: no new resourceVersion and no watch event, as on a
//!   real cluster.
//! - `events` (core/v1) and `events.k8s.io/v1` are two views of one store, as on
//!   a real cluster: an event published by kube's `Recorder` is also listed and
//!   watched as a core/v1 Event (fields converted).
//! - Objects with `metadata.finalizers` are only marked for deletion
//!   (`deletionTimestamp`) and go away when the last finalizer is removed.
//! - Resources with a status subresource (everything except a few kinds such as
//!   Event, Lease, Secret, ConfigMap and webhook configurations) ignore `.status`
//!   on the main resource and everything but `.status` on `/status`. Test-side
//!   [`FakeApi::upsert`] writes the whole object.
//! - Server-side apply tracks which manager set which field (hidden, no
//!   `managedFields` is served): a non-forced apply that changes a field owned by
//!   another manager gets `409 Conflict`, and fields a manager stops applying are
//!   removed. Lists are atomic (replaced as a whole).
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Largest request body accepted.
const MAX_BODY: usize = 8 << 20;
/// Server-side watch timeout when the client sends none.
const DEFAULT_WATCH_TIMEOUT_SECS: u64 = 300;
/// Bookmarks are sent this often to watches that allow them (a real server does
/// it about once a minute; tests want progress fast).
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);
/// Kinds that have no status subresource (all other kinds have one).
const KINDS_WITHOUT_STATUS: &[&str] = &[
    "Event",
    "Lease",
    "Secret",
    "ConfigMap",
    "ServiceAccount",
    "Endpoints",
    "EndpointSlice",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];
/// metadata fields only the server sets; clients cannot change or own them.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];
/// The server-stamped part of [`SYSTEM_METADATA`] (all but name and namespace).
fn server_stamped() -> &'static [&'static str] {
    &SYSTEM_METADATA[2..]
}
/// core/v1 Event field name <-> events.k8s.io/v1 Event field name.
const EVENT_FIELD_NAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// A kind of object the fake serves (what a CRD or a built-in API would declare).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// API group, `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl Resource {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Resource {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        }
    }

    /// flagger.app/v1beta1 Canary.
    pub fn canaries() -> Self {
        Self::new("flagger.app", "v1beta1", "Canary", "canaries", true)
    }

    /// core/v1 Event (same store as [`Resource::events_v1`]).
    pub fn events() -> Self {
        Self::new("", "v1", "Event", "events", true)
    }

    /// events.k8s.io/v1 Event, what kube-runtime's `Recorder` writes.
    pub fn events_v1() -> Self {
        Self::new("events.k8s.io", "v1", "Event", "events", true)
    }

    pub fn leases() -> Self {
        Self::new("coordination.k8s.io", "v1", "Lease", "leases", true)
    }

    pub fn secrets() -> Self {
        Self::new("", "v1", "Secret", "secrets", true)
    }

    pub fn configmaps() -> Self {
        Self::new("", "v1", "ConfigMap", "configmaps", true)
    }

    pub fn mutating_webhooks() -> Self {
        Self::new(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        )
    }

    pub fn validating_webhooks() -> Self {
        Self::new(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
        )
    }

    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL prefix of this resource's group/version.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The path of the object (or of the collection when `name` is `None`).
    pub fn path(&self, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut path = self.group_version_path();
        if let (true, Some(ns)) = (self.namespaced, namespace) {
            path.push_str(&format!("/namespaces/{ns}"));
        }
        path.push('/');
        path.push_str(&self.plural);
        if let Some(name) = name {
            path.push('/');
            path.push_str(name);
        }
        path
    }

    fn is_event(&self) -> bool {
        self.plural == "events" && (self.group.is_empty() || self.group == "events.k8s.io")
    }

    fn is_core_event(&self) -> bool {
        self.is_event() && self.group.is_empty()
    }

    /// Versions (and the two Event APIs) share one store.
    fn storage(&self) -> String {
        if self.is_event() {
            "events".into()
        } else {
            format!("{}/{}", self.group, self.plural)
        }
    }

    /// How error messages name the resource: `canaries.flagger.app`, `secrets`.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn has_status(&self) -> bool {
        !KINDS_WITHOUT_STATUS.contains(&self.kind.as_str())
    }

    /// CRD-backed: replace (PUT) requires a resourceVersion.
    fn is_custom(&self) -> bool {
        self.group.contains('.') && !self.group.ends_with(".k8s.io")
    }

    fn same_endpoint(&self, other: &Resource) -> bool {
        self.group == other.group && self.version == other.version && self.plural == other.plural
    }
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RequestLog {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string.
    pub query: String,
    pub content_type: Option<String>,
    pub body: String,
}

impl RequestLog {
    /// A decoded query parameter, e.g. `param("fieldManager")`.
    pub fn param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// The body parsed as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch").as_deref(), Some("true" | "1"))
    }
}

/// The fake API server. Cheap to clone; it stops when the last clone is dropped
/// (or on [`FakeApi::stop`]).
#[derive(Clone)]
pub struct FakeApi {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.pulse.send_modify(|p| p.stopped = true);
    }
}

impl FakeApi {
    /// Binds 127.0.0.1:0 and serves in a background task of the current runtime.
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().expect("local address");
        let (pulse, mut stopped) = watch::channel(Pulse::default());
        let shared = Arc::new(Shared {
            addr,
            state: Mutex::new(State {
                rv: 1,
                ..State::default()
            }),
            pulse,
            open_watches: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|p| p.stopped).await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        FakeApi {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared().addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared().addr
    }

    /// Writes a kubeconfig whose current context points at this server
    /// (user token `fake`, namespace `default`).
    pub fn write_kubeconfig(&self, path: &Path) {
        let config = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake\n  user:\n    token: fake\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n",
            url = self.url()
        );
        std::fs::write(path, config).expect("write the kubeconfig");
    }

    /// A kube client for this server (default namespace `default`, never
    /// through a proxy). Call it inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("server URL"));
        config.default_namespace = "default".into();
        config.proxy_url = None;
        kube::Client::try_from(config).expect("kube client for the fake API server")
    }

    /// Serves `res` from now on (like installing its CRD). Unregistered
    /// resources answer 404; their objects can still be prepared with
    /// [`FakeApi::upsert`].
    pub fn register(&self, res: Resource) {
        let mut st = self.shared().lock();
        if !st.registered.iter().any(|r| r.same_endpoint(&res)) {
            st.registered.push(res);
        }
    }

    /// Stops serving `res` (like deleting its CRD, but the objects are kept):
    /// its open watches end and later requests answer 404.
    pub fn unregister(&self, res: &Resource) {
        let mut st = self.shared().lock();
        st.registered.retain(|r| !r.same_endpoint(res));
        self.shared().pulse.send_modify(|p| p.registry += 1);
    }

    /// Creates or replaces an object as an admin would: the whole object
    /// (status included) is written. Fills `metadata.uid`/`creationTimestamp` if
    /// missing, `metadata.namespace` with `default` if namespaced and missing,
    /// sets `generation` and a new `resourceVersion`, and emits ADDED or MODIFIED.
    /// Returns the stored object. Panics if `metadata.name` is missing.
    pub fn upsert(&self, res: &Resource, obj: Value) -> Value {
        self.shared()
            .write(|st| st.upsert(res, obj))
            .unwrap_or_else(|e| panic!("FakeApi::upsert: {}", e.message))
    }

    pub fn get(&self, res: &Resource, namespace: Option<&str>, name: &str) -> Option<Value> {
        let st = self.shared().lock();
        st.objects
            .get(&key(res, namespace, name))
            .map(|o| present(res, o))
    }

    /// Every object of `res` in every namespace, sorted by namespace and name.
    pub fn list(&self, res: &Resource) -> Vec<Value> {
        let st = self.shared().lock();
        st.stored(res, None).map(|o| present(res, o)).collect()
    }

    /// Deletes an object (nothing if it doesn't exist) and emits DELETED. An
    /// object with finalizers is only marked (`deletionTimestamp`, MODIFIED).
    pub fn delete(&self, res: &Resource, namespace: Option<&str>, name: &str) {
        let k = key(res, namespace, name);
        let _ = self
            .shared()
            .write(|st| st.delete(res, &k, &Preconditions::default(), false));
    }

    /// Deletes an object even if it has finalizers.
    pub fn force_delete(&self, res: &Resource, namespace: Option<&str>, name: &str) {
        let k = key(res, namespace, name);
        self.shared().write(|st| {
            if st.objects.contains_key(&k) {
                st.remove_now(res, &k);
            }
        });
    }

    /// Simulates an etcd compaction: every open watch gets an ERROR event with a
    /// `410 Gone` (reason `Expired`) Status and is closed, and a watch from a
    /// resourceVersion older than the current one gets the same, so clients must
    /// list again.
    pub fn expire_watches(&self) {
        let mut st = self.shared().lock();
        st.compacted = st.rv;
        let rv = st.rv;
        st.history.retain(|c| c.rv > rv);
        self.shared().pulse.send_modify(|p| p.expired += 1);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared().lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared().lock().requests.clear();
    }

    /// While down, every request answers 503 (Status `ServiceUnavailable`) and
    /// open watches are closed. Note that kube's default client retries 503s
    /// with exponential backoff (from 5 ms, 15 times), so a kube request made
    /// during a short outage usually just waits and then succeeds; build the
    /// client with `Config::default_retry = false` to see the 503 directly.
    pub fn set_down(&self, down: bool) {
        let mut st = self.shared().lock();
        st.down = down;
        self.shared().pulse.send_modify(|p| p.down = down);
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared().lock().rv
    }

    /// How many watch streams are open now.
    pub fn open_watches(&self) -> usize {
        self.shared().open_watches.load(Ordering::SeqCst)
    }

    /// Managers owning fields of an object through server-side apply or
    /// updates, as `(manager, "Apply" | "Update")`.
    pub fn field_managers(
        &self,
        res: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Vec<(String, String)> {
        let st = self.shared().lock();
        st.owners
            .get(&key(res, namespace, name))
            .map(|o| {
                o.0.keys()
                    .map(|(m, op)| (m.clone(), format!("{op:?}")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops serving: open watches end, new connections are refused.
    pub fn stop(&self) {
        self.shared().pulse.send_modify(|p| p.stopped = true);
    }
}

// ---------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------

/// (storage, namespace or "", name)
type Key = (String, String, String);

fn key(res: &Resource, namespace: Option<&str>, name: &str) -> Key {
    let ns = if res.namespaced {
        namespace.unwrap_or("default")
    } else {
        ""
    };
    (res.storage(), ns.to_string(), name.to_string())
}

/// What watchers wait on: any change wakes them up and they read the state.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Pulse {
    rv: u64,
    /// Bumped by `expire_watches`.
    expired: u64,
    /// Bumped by `unregister`.
    registry: u64,
    down: bool,
    stopped: bool,
}

struct Shared {
    addr: SocketAddr,
    state: Mutex<State>,
    pulse: watch::Sender<Pulse>,
    open_watches: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the server for the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state and wakes the watchers if it wrote anything.
    fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.lock();
        let before = st.rv;
        let out = f(&mut st);
        if st.rv != before {
            let rv = st.rv;
            self.pulse.send_modify(|p| p.rv = rv);
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One entry of the watch history. Objects are in storage form.
struct Change {
    rv: u64,
    storage: String,
    kind: ChangeType,
    obj: Value,
    /// The object before a MODIFIED, to tell watchers with selectors that it
    /// entered or left their selection.
    prev: Option<Value>,
}

#[derive(Default)]
struct State {
    registered: Vec<Resource>,
    /// Storage form: core/v1 Events are kept as events.k8s.io/v1.
    objects: BTreeMap<Key, Value>,
    owners: HashMap<Key, Owners>,
    rv: u64,
    /// Watches from an older resourceVersion get 410.
    compacted: u64,
    history: Vec<Arc<Change>>,
    requests: Vec<RequestLog>,
    down: bool,
}

/// Who writes, for field ownership.
enum Writer {
    /// The test itself: takes no ownership.
    Admin,
    Update(String),
    /// A server-side apply and the fields it applied.
    Apply(String, BTreeSet<FieldPath>),
}

#[derive(Default)]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

impl State {
    fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.registered
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    fn is_registered(&self, res: &Resource) -> bool {
        self.registered.iter().any(|r| r.same_endpoint(res))
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stored objects of `res`, optionally in one namespace.
    fn stored<'a>(
        &'a self,
        res: &Resource,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        let storage = res.storage();
        self.objects
            .iter()
            .filter(move |((s, ns, _), _)| *s == storage && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v)
    }

    fn record(&mut self, storage: &str, kind: ChangeType, obj: Value, prev: Option<Value>) {
        self.history.push(Arc::new(Change {
            rv: self.rv,
            storage: storage.to_string(),
            kind,
            obj,
            prev,
        }));
    }

    fn changes_after(&self, rv: u64) -> Vec<Arc<Change>> {
        let start = self.history.partition_point(|c| c.rv <= rv);
        self.history[start..].to_vec()
    }

    /// POST (and server-side apply of a missing object).
    fn create(
        &mut self,
        res: &Resource,
        namespace: Option<&str>,
        body: Value,
        writer: Writer,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let Value::Object(mut obj) = body else {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        };
        check_kind(res, &obj)?;
        let meta = metadata_mut(&mut obj)?;
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let ns = if res.namespaced {
            let ns = namespace.unwrap_or("default").to_string();
            match meta.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
            Some(ns)
        } else {
            meta.remove("namespace");
            None
        };
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => loop {
                    let candidate = format!("{prefix}{}", random_suffix(5));
                    if !self
                        .objects
                        .contains_key(&key(res, ns.as_deref(), &candidate))
                    {
                        break candidate;
                    }
                },
                _ => {
                    return Err(ApiError::invalid(
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        meta.insert("name".into(), json!(name));
        for field in server_stamped() {
            meta.remove(*field);
        }
        let k = key(res, ns.as_deref(), &name);
        if self.objects.contains_key(&k) {
            return Err(ApiError::already_exists(res, &name));
        }
        if res.has_status() {
            obj.remove("status");
        }
        let mut obj = Value::Object(obj);
        fold_string_data(res, &mut obj);
        if dry_run {
            stamp_new(res, &mut obj, 0);
            return Ok(obj);
        }
        Ok(self.insert_new(res, k, obj, writer))
    }

    /// Stores a new object: identity stamps, resourceVersion, ADDED.
    fn insert_new(&mut self, res: &Resource, k: Key, mut obj: Value, writer: Writer) -> Value {
        let rv = self.next_rv();
        stamp_new(res, &mut obj, rv);
        self.objects.insert(k.clone(), storage_form(res, &obj));
        self.record(&k.0, ChangeType::Added, storage_form(res, &obj), None);
        self.owners
            .entry(k)
            .or_default()
            .record(&writer, &json!({}), &obj);
        obj
    }

    /// Writes `new` over the stored `old` (both as `res` presents them):
    /// no-op detection, generation, finalizer-driven deletion, MODIFIED.
    fn replace_existing(
        &mut self,
        res: &Resource,
        k: &Key,
        old: &Value,
        mut new: Value,
        writer: Writer,
        dry_run: bool,
    ) -> Value {
        set_rv(&mut new, &rv_of(old));
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bump = i64::from(spec_part(res, old) != spec_part(res, &new));
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("generation".into(), json!(generation + bump));
        }
        if dry_run {
            return new;
        }
        if new == *old {
            // Nothing changed: no new resourceVersion, no event (as etcd would).
            self.owners
                .entry(k.clone())
                .or_default()
                .record(&writer, old, old);
            return new;
        }
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers {
            // The last finalizer is gone: the update deletes the object.
            self.objects.insert(k.clone(), storage_form(res, &new));
            return self.remove_now(res, k);
        }
        let rv = self.next_rv();
        set_rv(&mut new, &rv.to_string());
        let prev = self.objects.insert(k.clone(), storage_form(res, &new));
        self.record(&k.0, ChangeType::Modified, storage_form(res, &new), prev);
        self.owners
            .entry(k.clone())
            .or_default()
            .record(&writer, old, &new);
        new
    }

    /// Removes an object now and emits DELETED (with a new resourceVersion).
    fn remove_now(&mut self, res: &Resource, k: &Key) -> Value {
        let Some(mut obj) = self.objects.remove(k) else {
            return Value::Null;
        };
        let rv = self.next_rv();
        set_rv(&mut obj, &rv.to_string());
        self.record(&k.0, ChangeType::Deleted, obj.clone(), None);
        self.owners.remove(k);
        present(res, &obj)
    }

    /// PUT, PATCH and apply of an existing object: checks the resourceVersion
    /// precondition, keeps what clients cannot change, then writes.
    fn update(
        &mut self,
        res: &Resource,
        k: &Key,
        new: Value,
        status_only: bool,
        writer: Writer,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let old = match self.objects.get(k) {
            Some(stored) => present(res, stored),
            None => return Err(ApiError::not_found(res, &k.2)),
        };
        if !new.is_object() {
            return Err(ApiError::invalid("the patched object is not a JSON object"));
        }
        if let Some(rv) = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !rv.is_empty()
            && rv != rv_of(&old)
        {
            return Err(ApiError::conflict(res, &k.2));
        }
        let mut new = if status_only {
            let mut merged = old.clone();
            set_or_remove(&mut merged, "status", new.get("status").cloned());
            merged
        } else {
            keep_server_fields(res, &old, new)
        };
        fold_string_data(res, &mut new);
        Ok(self.replace_existing(res, k, &old, new, writer, dry_run))
    }

    /// DELETE: removes the object, or only marks it while it has finalizers.
    fn delete(
        &mut self,
        res: &Resource,
        k: &Key,
        pre: &Preconditions,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let old = match self.objects.get(k) {
            Some(stored) => present(res, stored),
            None => return Err(ApiError::not_found(res, &k.2)),
        };
        if let Some(uid) = &pre.uid
            && old.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(ApiError::precondition(res, &k.2, "UID"));
        }
        if let Some(rv) = &pre.resource_version
            && *rv != rv_of(&old)
        {
            return Err(ApiError::precondition(res, &k.2, "ResourceVersion"));
        }
        if dry_run {
            return Ok(old);
        }
        let finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if !finalizers {
            return Ok(self.remove_now(res, k));
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(old);
        }
        let mut marked = old.clone();
        if let Some(meta) = marked.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        Ok(self.replace_existing(res, k, &old, marked, Writer::Admin, false))
    }

    /// The test's own create-or-replace: writes everything as given.
    fn upsert(&mut self, res: &Resource, obj: Value) -> Result<Value, ApiError> {
        let Value::Object(mut obj) = obj else {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        };
        let meta = metadata_mut(&mut obj)?;
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid("metadata.name is required"))?
            .to_string();
        let ns = if res.namespaced {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string();
            meta.insert("namespace".into(), json!(ns));
            Some(ns)
        } else {
            meta.remove("namespace");
            None
        };
        meta.remove("managedFields");
        let k = key(res, ns.as_deref(), &name);
        let mut obj = Value::Object(obj);
        fold_string_data(res, &mut obj);
        let Some(stored) = self.objects.get(&k) else {
            return Ok(self.insert_new(res, k, obj, Writer::Admin));
        };
        let old = present(res, stored);
        if let (Some(meta), Some(old_meta)) = (
            obj.get_mut("metadata").and_then(Value::as_object_mut),
            old.get("metadata").and_then(Value::as_object),
        ) {
            for field in ["uid", "creationTimestamp"] {
                if !meta.contains_key(field)
                    && let Some(v) = old_meta.get(field)
                {
                    meta.insert(field.into(), v.clone());
                }
            }
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        Ok(self.replace_existing(res, &k, &old, obj, Writer::Admin, false))
    }
}

/// Sets what a new object gets from the server.
fn stamp_new(res: &Resource, obj: &mut Value, rv: u64) {
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(res.api_version()));
        o.insert("kind".into(), json!(res.kind));
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("uid").or_insert_with(|| json!(new_uid()));
        meta.entry("creationTimestamp")
            .or_insert_with(|| json!(now_rfc3339()));
        meta.entry("generation").or_insert(json!(1));
        meta.insert(
            "resourceVersion".into(),
            json!(if rv == 0 {
                String::new()
            } else {
                rv.to_string()
            }),
        );
        meta.remove("managedFields");
    }
}

/// The client's new object, with what only the server may set taken from `old`.
fn keep_server_fields(res: &Resource, old: &Value, mut new: Value) -> Value {
    let old_meta = old.get("metadata").and_then(Value::as_object);
    if let Some(obj) = new.as_object_mut() {
        obj.insert("apiVersion".into(), json!(res.api_version()));
        obj.insert("kind".into(), json!(res.kind));
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj.insert("metadata".into(), json!({}));
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in SYSTEM_METADATA {
                match old_meta.and_then(|m| m.get(*field)) {
                    Some(v) if *field != "managedFields" => {
                        meta.insert((*field).into(), v.clone());
                    }
                    _ => {
                        meta.remove(*field);
                    }
                }
            }
        }
    }
    if res.has_status() {
        set_or_remove(&mut new, "status", old.get("status").cloned());
    }
    new
}

/// What `generation` tracks: everything but metadata (and status when it is a
/// subresource).
fn spec_part(res: &Resource, obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("apiVersion");
        o.remove("kind");
        if res.has_status() {
            o.remove("status");
        }
    }
    v
}

fn metadata_mut(obj: &mut Map<String, Value>) -> Result<&mut Map<String, Value>, ApiError> {
    obj.entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be a JSON object"))
}

fn check_kind(res: &Resource, obj: &Map<String, Value>) -> Result<(), ApiError> {
    match obj.get("kind").and_then(Value::as_str) {
        Some(kind) if !kind.is_empty() && kind != res.kind => Err(ApiError::bad_request(format!(
            "the kind in the body ({kind}) does not match the resource ({})",
            res.kind
        ))),
        _ => Ok(()),
    }
}

fn rv_of(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn set_rv(obj: &mut Value, rv: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv));
    }
}

fn set_or_remove(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Some(o) = obj.as_object_mut() {
        match value {
            Some(v) => o.insert(field.into(), v),
            None => o.remove(field),
        };
    }
}

/// Secrets: the server folds `stringData` into base64 `data`.
fn fold_string_data(res: &Resource, obj: &mut Value) {
    if res.kind != "Secret" || !res.group.is_empty() {
        return;
    }
    let Some(o) = obj.as_object_mut() else { return };
    let Some(Value::Object(plain)) = o.remove("stringData") else {
        return;
    };
    if !o.get("data").is_some_and(Value::is_object) {
        o.insert("data".into(), json!({}));
    }
    if let Some(data) = o.get_mut("data").and_then(Value::as_object_mut) {
        for (k, v) in plain {
            if let Some(s) = v.as_str() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(s);
                data.insert(k, json!(encoded));
            }
        }
    }
}

/// An object as `res` serves it (apiVersion/kind set, Events converted).
fn present(res: &Resource, stored: &Value) -> Value {
    let mut v = stored.clone();
    if res.is_core_event() {
        rename_fields(&mut v, true);
        if let Some(o) = v.as_object_mut() {
            o.entry("involvedObject").or_insert_with(|| json!({}));
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), json!(res.api_version()));
        o.insert("kind".into(), json!(res.kind));
    }
    v
}

/// The storage form of an object `res` serves.
fn storage_form(res: &Resource, presented: &Value) -> Value {
    let mut v = presented.clone();
    if res.is_core_event() {
        rename_fields(&mut v, false);
    }
    if let Some(o) = v.as_object_mut() {
        let api_version = if res.is_event() {
            "events.k8s.io/v1".to_string()
        } else {
            res.api_version()
        };
        o.insert("apiVersion".into(), json!(api_version));
        o.insert("kind".into(), json!(res.kind));
    }
    v
}

/// Renames top-level Event fields between the core/v1 and events.k8s.io/v1 names.
fn rename_fields(v: &mut Value, to_core: bool) {
    let Some(o) = v.as_object_mut() else { return };
    for &(core, v1) in EVENT_FIELD_NAMES {
        let (from, to) = if to_core { (v1, core) } else { (core, v1) };
        if let Some(value) = o.remove(from) {
            o.insert(to.into(), value);
        }
    }
}

fn partial_metadata(obj: Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

// ---------------------------------------------------------------------------
// Server-side apply field ownership
// ---------------------------------------------------------------------------

type FieldPath = Vec<String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Apply,
    Update,
}

/// Which manager owns which leaf field (lists count as one leaf).
#[derive(Default, Debug)]
struct Owners(BTreeMap<(String, Op), BTreeSet<FieldPath>>);

impl Owners {
    /// Fields the apply would change that another manager owns.
    fn conflicts(
        &self,
        manager: &str,
        applied: &BTreeMap<FieldPath, Value>,
        current: &BTreeMap<FieldPath, Value>,
    ) -> Vec<(FieldPath, String)> {
        let mut out = Vec::new();
        for (path, value) in applied {
            if current.get(path).is_none_or(|cur| cur == value) {
                continue;
            }
            for ((owner, _), fields) in &self.0 {
                if owner != manager && fields.contains(path) {
                    out.push((path.clone(), owner.clone()));
                }
            }
        }
        out
    }

    /// Fields `manager` applied before, no longer applies, and nobody else owns:
    /// apply removes them.
    fn dropped(&self, manager: &str, applied: &BTreeSet<FieldPath>) -> Vec<FieldPath> {
        let me = (manager.to_string(), Op::Apply);
        let Some(before) = self.0.get(&me) else {
            return Vec::new();
        };
        before
            .difference(applied)
            .filter(|p| {
                !self
                    .0
                    .iter()
                    .any(|(who, fields)| *who != me && fields.contains(*p))
            })
            .cloned()
            .collect()
    }

    /// Updates ownership after a write from `old` to `new`: changed fields move
    /// to the writer, fields that no longer exist belong to nobody.
    fn record(&mut self, writer: &Writer, old: &Value, new: &Value) {
        let before = leaves(old);
        let after = leaves(new);
        let changed: Vec<&FieldPath> = after
            .iter()
            .filter(|(p, v)| before.get(*p) != Some(*v))
            .map(|(p, _)| p)
            .collect();
        for fields in self.0.values_mut() {
            for p in &changed {
                fields.remove(*p);
            }
        }
        match writer {
            Writer::Admin => {}
            Writer::Update(m) => self
                .0
                .entry((m.clone(), Op::Update))
                .or_default()
                .extend(changed.into_iter().cloned()),
            Writer::Apply(m, applied) => {
                self.0.insert((m.clone(), Op::Apply), applied.clone());
            }
        }
        for fields in self.0.values_mut() {
            fields.retain(|p| after.contains_key(p));
        }
        self.0.retain(|_, fields| !fields.is_empty());
    }
}

/// Leaf fields (scalars and whole lists) by path, without server-owned fields.
fn leaves(v: &Value) -> BTreeMap<FieldPath, Value> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeMap<FieldPath, Value>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    path.push(k.clone());
                    let system = match path.as_slice() {
                        [top] => top == "apiVersion" || top == "kind",
                        [m, field] => m == "metadata" && SYSTEM_METADATA.contains(&field.as_str()),
                        _ => false,
                    };
                    if !system {
                        walk(child, path, out);
                    }
                    path.pop();
                }
            }
            Value::Null => {}
            leaf => {
                out.insert(path.clone(), leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn remove_path(v: &mut Value, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            if let Some(o) = v.as_object_mut() {
                o.remove(last);
            }
        }
        [first, rest @ ..] => {
            if let Some(child) = v.get_mut(first) {
                remove_path(child, rest);
            }
        }
    }
}

fn render_path(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

// ---------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------

enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

struct FieldReq {
    path: Vec<&'static str>,
    value: String,
    negate: bool,
}

/// Namespace, label and field selection of a list or watch.
struct Selection {
    namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Selection {
    fn parse(
        res: &Resource,
        namespace: Option<&str>,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Selection, ApiError> {
        Ok(Selection {
            namespace: namespace.map(str::to_string),
            labels: parse_labels(labels.unwrap_or("")).map_err(|e| {
                ApiError::bad_request(format!("unable to parse labelSelector: {e}"))
            })?,
            fields: parse_fields(res, fields.unwrap_or(""))?,
        })
    }

    /// `obj` as the resource presents it.
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|req| {
                let mut cur = Some(obj);
                for part in &req.path {
                    cur = cur.and_then(|c| c.get(*part));
                }
                let actual = match cur {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                (actual == req.value) != req.negate
            })
    }
}

fn parse_labels(s: &str) -> Result<Vec<LabelReq>, String> {
    // Split on commas outside `in (a,b)` parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    let mut out = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let req = if let Some(k) = term.strip_prefix('!') {
            LabelReq::NotExists(k.trim().to_string())
        } else if let Some((head, rest)) = term.split_once('(') {
            let values = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("missing ')' in {term:?}"))?
                .split(',')
                .map(|v| v.trim().to_string())
                .collect();
            match head.split_whitespace().collect::<Vec<_>>().as_slice() {
                [k, "in"] => LabelReq::In(k.to_string(), values),
                [k, "notin"] => LabelReq::NotIn(k.to_string(), values),
                _ => return Err(format!("unknown operator in {term:?}")),
            }
        } else if let Some((k, v)) = term.split_once("!=") {
            LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else {
            LabelReq::Exists(term.to_string())
        };
        let key = match &req {
            LabelReq::Eq(k, _)
            | LabelReq::NotEq(k, _)
            | LabelReq::In(k, _)
            | LabelReq::NotIn(k, _)
            | LabelReq::Exists(k)
            | LabelReq::NotExists(k) => k,
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("invalid label key in {term:?}"));
        }
        out.push(req);
    }
    Ok(out)
}

fn parse_fields(res: &Resource, s: &str) -> Result<Vec<FieldReq>, ApiError> {
    let mut out = Vec::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v, negate) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (k, v, false)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid selector: '{s}'; can't understand '{term}'"
            )));
        };
        let path = field_label(res, k.trim()).ok_or_else(|| {
            ApiError::bad_request(format!("field label not supported: {}", k.trim()))
        })?;
        out.push(FieldReq {
            path,
            value: v.trim().to_string(),
            negate,
        });
    }
    Ok(out)
}

/// The field labels the real server supports for `res`, as paths in the object
/// `res` presents (Events accept both the core and the events.k8s.io names).
fn field_label(res: &Resource, label: &str) -> Option<Vec<&'static str>> {
    const REF_FIELDS: &[&str] = &[
        "kind",
        "namespace",
        "name",
        "uid",
        "apiVersion",
        "resourceVersion",
        "fieldPath",
    ];
    match label {
        "metadata.name" => return Some(vec!["metadata", "name"]),
        "metadata.namespace" => return Some(vec!["metadata", "namespace"]),
        _ => {}
    }
    if res.is_event() {
        let core = res.is_core_event();
        let reference = if core { "involvedObject" } else { "regarding" };
        if let Some(sub) = label
            .strip_prefix("involvedObject.")
            .or_else(|| label.strip_prefix("regarding."))
        {
            return REF_FIELDS
                .iter()
                .find(|f| **f == sub)
                .map(|f| vec![reference, *f]);
        }
        return match label {
            "reason" => Some(vec!["reason"]),
            "type" => Some(vec!["type"]),
            "reportingComponent" | "reportingController" => Some(vec![if core {
                "reportingComponent"
            } else {
                "reportingController"
            }]),
            "source" => Some(vec![
                if core { "source" } else { "deprecatedSource" },
                "component",
            ]),
            _ => None,
        };
    }
    if res.kind == "Secret" && res.group.is_empty() && label == "type" {
        return Some(vec!["type"]);
    }
    None
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A failed request, answered as a `Status` object.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    fn object_details(res: &Resource, name: &str) -> Value {
        let mut d = json!({"name": name, "kind": res.plural});
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        d
    }

    fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
            .with_details(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}))
    }

    fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .with_details(Self::object_details(res, name))
    }

    fn already_exists(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .with_details(Self::object_details(res, name))
    }

    fn conflict(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                res.qualified()
            ),
        )
        .with_details(Self::object_details(res, name))
    }

    fn precondition(res: &Resource, name: &str, what: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what} in precondition does not match the object",
                res.qualified()
            ),
        )
        .with_details(Self::object_details(res, name))
    }

    fn apply_conflicts(res: &Resource, name: &str, conflicts: &[(FieldPath, String)]) -> Self {
        let listed: Vec<String> = conflicts
            .iter()
            .map(|(p, m)| format!("conflict with \"{m}\": {}", render_path(p)))
            .collect();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(p, m)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": render_path(p)})
            })
            .collect();
        let mut details = Self::object_details(res, name);
        details["causes"] = json!(causes);
        let plural = if conflicts.len() == 1 { "" } else { "s" };
        Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{plural}: {}",
                conflicts.len(),
                listed.join("; ")
            ),
        )
        .with_details(details)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }

    fn response(&self) -> Response {
        json_response(
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &self.status(),
        )
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    accept: String,
    user_agent: String,
    body: Bytes,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })
    }

    /// For Update operations: `fieldManager`, else the User-Agent's program.
    fn manager(&self) -> String {
        match self.param("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self
                .user_agent
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_string(),
        }
    }
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body = axum::body::to_bytes(body, MAX_BODY).await;
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let req = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        content_type: header(header::CONTENT_TYPE),
        accept: header(header::ACCEPT).unwrap_or_default(),
        user_agent: header(header::USER_AGENT).unwrap_or_default(),
        body: body.as_ref().cloned().unwrap_or_default(),
    };
    let down = {
        let mut st = shared.lock();
        st.requests.push(RequestLog {
            method: req.method.to_string(),
            path: req.path.clone(),
            query: raw_query,
            content_type: req.content_type.clone(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
        });
        st.down
    };
    if down {
        return ApiError::new(503, "ServiceUnavailable", "the fake API server is down").response();
    }
    if let Err(e) = body {
        return ApiError::bad_request(format!("reading the request body: {e}")).response();
    }
    match dispatch(&shared, &req) {
        Ok(response) => response,
        Err(e) => e.response(),
    }
}

fn dispatch(shared: &Arc<Shared>, req: &Req) -> Result<Response, ApiError> {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return discovery(shared, req, &segs),
    };
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => (
            Some(*ns),
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [plural, tail @ ..] if tail.len() <= 2 => {
            (None, *plural, tail.first().copied(), tail.get(1).copied())
        }
        _ => return Err(ApiError::no_route()),
    };
    let res = shared
        .lock()
        .lookup(group, version, plural)
        .ok_or_else(ApiError::no_route)?;
    if (namespace.is_some() && !res.namespaced)
        || (namespace.is_none() && res.namespaced && name.is_some())
    {
        return Err(ApiError::no_route());
    }
    let status_only = match sub {
        None => false,
        Some("status") if res.has_status() => true,
        Some(_) => return Err(ApiError::no_route()),
    };
    let meta_only = req.accept.contains("as=PartialObjectMetadata");
    let dry_run = req.param("dryRun").is_some();
    let Some(name) = name else {
        return match req.method {
            Method::GET if req.flag("watch") => watch(shared, req, &res, namespace, meta_only),
            Method::GET => list(shared, req, &res, namespace, meta_only),
            Method::POST if namespace.is_some() || !res.namespaced => {
                let body = req.json_body()?;
                let writer = Writer::Update(req.manager());
                let created =
                    shared.write(|st| st.create(&res, namespace, body, writer, dry_run))?;
                Ok(json_response(StatusCode::CREATED, &created))
            }
            Method::DELETE => delete_collection(shared, req, &res, namespace),
            _ => Err(ApiError::method_not_allowed()),
        };
    };
    let k = key(&res, namespace, name);
    let out = match req.method {
        Method::GET => shared
            .lock()
            .objects
            .get(&k)
            .map(|o| present(&res, o))
            .ok_or_else(|| ApiError::not_found(&res, name))?,
        Method::PUT => {
            let body = req.json_body()?;
            check_identity(&res, &body, namespace, name)?;
            if res.is_custom()
                && body
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                return Err(ApiError::invalid(
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
            let writer = Writer::Update(req.manager());
            shared.write(|st| st.update(&res, &k, body, status_only, writer, dry_run))?
        }
        Method::PATCH => {
            let (code, obj) = patch(shared, req, &res, &k, status_only, dry_run)?;
            return Ok(json_response(
                code,
                &if meta_only {
                    partial_metadata(obj)
                } else {
                    obj
                },
            ));
        }
        Method::DELETE if !status_only => {
            let options = if req.body.is_empty() {
                Value::Null
            } else {
                req.json_body()?
            };
            let pre = Preconditions {
                uid: options
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                resource_version: options
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            };
            let dry_run = dry_run
                || options
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| !d.is_empty());
            shared.write(|st| st.delete(&res, &k, &pre, dry_run))?
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    Ok(json_response(
        StatusCode::OK,
        &if meta_only {
            partial_metadata(out)
        } else {
            out
        },
    ))
}

/// The body of a PUT names the object of the URL.
fn check_identity(
    res: &Resource,
    body: &Value,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    check_kind(res, obj)?;
    match body.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        None => return Err(ApiError::bad_request("metadata.name is required")),
    }
    if let (Some(ns), Some(given)) = (
        namespace,
        body.pointer("/metadata/namespace").and_then(Value::as_str),
    ) && !given.is_empty()
        && given != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

fn patch(
    shared: &Shared,
    req: &Req,
    res: &Resource,
    k: &Key,
    status_only: bool,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let content_type = req
        .content_type
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if content_type == "application/apply-patch+yaml" {
        return apply(shared, req, res, k, status_only, dry_run);
    }
    let body = req.json_body()?;
    let writer = Writer::Update(req.manager());
    shared.write(|st| {
        let old = match st.objects.get(k) {
            Some(stored) => present(res, stored),
            None => return Err(ApiError::not_found(res, &k.2)),
        };
        let mut new = old.clone();
        match content_type.as_str() {
            "application/merge-patch+json" => json_patch::merge(&mut new, &body),
            // Treated as a merge patch, minus the `$patch`-style directives.
            "application/strategic-merge-patch+json" => {
                json_patch::merge(&mut new, &strip_directives(body))
            }
            "application/json-patch+json" => {
                let ops: json_patch::Patch = serde_json::from_value(body).map_err(|e| {
                    ApiError::bad_request(format!("invalid JSON patch: {e}"))
                })?;
                json_patch::patch(&mut new, &ops).map_err(|e| {
                    ApiError::invalid(format!("the JSON patch could not be applied: {e}"))
                })?;
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"),
                ));
            }
        }
        st.update(res, k, new, status_only, writer, dry_run)
            .map(|o| (StatusCode::OK, o))
    })
}

/// Server-side apply: create if missing, else merge the applied fields in
/// (objects recursively, lists replaced, null removes), with field ownership.
fn apply(
    shared: &Shared,
    req: &Req,
    res: &Resource,
    k: &Key,
    status_only: bool,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let manager = req
        .param("fieldManager")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            )
        })?
        .to_string();
    let force = req.flag("force");
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| ApiError::bad_request("the apply body is not UTF-8"))?;
    // kube sends JSON; YAML (a superset) is what kubectl sends.
    let mut applied: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    let Some(obj) = applied.as_object() else {
        return Err(ApiError::bad_request("the apply body must be an object"));
    };
    for field in ["apiVersion", "kind"] {
        if obj
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(format!(
                "{field} must be set in an apply configuration"
            )));
        }
    }
    check_kind(res, obj)?;
    if let Some(n) = applied.pointer("/metadata/name").and_then(Value::as_str)
        && n != k.2
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            k.2
        )));
    }
    let precondition = applied
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
        .map(str::to_string);
    if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in server_stamped() {
            meta.remove(*field);
        }
    }
    if let Some(o) = applied.as_object_mut() {
        if status_only {
            o.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        } else if res.has_status() {
            o.remove("status");
        }
    }
    let applied_leaves = leaves(&applied);
    let applied_paths: BTreeSet<FieldPath> = applied_leaves.keys().cloned().collect();
    let namespace = (!k.1.is_empty()).then_some(k.1.as_str());
    shared.write(|st| {
        let Some(stored) = st.objects.get(k) else {
            if status_only {
                return Err(ApiError::not_found(res, &k.2));
            }
            if precondition.is_some() {
                return Err(ApiError::conflict(res, &k.2));
            }
            if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("name".into(), json!(k.2));
            } else if let Some(o) = applied.as_object_mut() {
                o.insert("metadata".into(), json!({"name": k.2}));
            }
            let writer = Writer::Apply(manager, applied_paths);
            let created = st.create(res, namespace, applied, writer, dry_run)?;
            return Ok((StatusCode::CREATED, created));
        };
        let old = present(res, stored);
        if precondition.as_deref().is_some_and(|rv| rv != rv_of(&old)) {
            return Err(ApiError::conflict(res, &k.2));
        }
        let owners = st.owners.get(k);
        if !force && let Some(owners) = owners {
            let conflicts = owners.conflicts(&manager, &applied_leaves, &leaves(&old));
            if !conflicts.is_empty() {
                return Err(ApiError::apply_conflicts(res, &k.2, &conflicts));
            }
        }
        let dropped = owners
            .map(|o| o.dropped(&manager, &applied_paths))
            .unwrap_or_default();
        let mut new = old.clone();
        json_patch::merge(&mut new, &applied);
        for path in &dropped {
            remove_path(&mut new, path);
        }
        let writer = Writer::Apply(manager, applied_paths);
        st.update(res, k, new, status_only, writer, dry_run)
            .map(|o| (StatusCode::OK, o))
    })
}

/// Drops strategic-merge directives (`$patch`, `$retainKeys`, ...) recursively.
fn strip_directives(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        other => other,
    }
}

fn list(
    shared: &Shared,
    req: &Req,
    res: &Resource,
    namespace: Option<&str>,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let sel = Selection::parse(
        res,
        namespace,
        req.param("labelSelector"),
        req.param("fieldSelector"),
    )?;
    let st = shared.lock();
    let items: Vec<Value> = st
        .stored(res, namespace)
        .map(|o| present(res, o))
        .filter(|o| sel.matches(o))
        .map(|o| if meta_only { partial_metadata(o) } else { o })
        .collect();
    let (api_version, kind) = if meta_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        )
    } else {
        (res.api_version(), format!("{}List", res.kind))
    };
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &body))
}

fn delete_collection(
    shared: &Shared,
    req: &Req,
    res: &Resource,
    namespace: Option<&str>,
) -> Result<Response, ApiError> {
    let sel = Selection::parse(
        res,
        namespace,
        req.param("labelSelector"),
        req.param("fieldSelector"),
    )?;
    let dry_run = req.param("dryRun").is_some();
    let items = shared.write(|st| {
        let keys: Vec<Key> = st
            .objects
            .iter()
            .filter(|((s, ns, _), o)| {
                *s == res.storage()
                    && namespace.is_none_or(|n| n == ns)
                    && sel.matches(&present(res, o))
            })
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter()
            .filter_map(|k| st.delete(res, k, &Preconditions::default(), dry_run).ok())
            .collect::<Vec<_>>()
    });
    let body = json!({
        "apiVersion": res.api_version(),
        "kind": format!("{}List", res.kind),
        "metadata": {"resourceVersion": shared.lock().rv.to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// Discovery and the other non-resource endpoints.
fn discovery(shared: &Shared, req: &Req, segs: &[&str]) -> Result<Response, ApiError> {
    if req.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let st = shared.lock();
    let versions_of = |group: &str| -> Vec<String> {
        let mut vs: Vec<String> = Vec::new();
        for r in st.registered.iter().filter(|r| r.group == group) {
            if !vs.contains(&r.version) {
                vs.push(r.version.clone());
            }
        }
        vs
    };
    let group_json = |group: &str| -> Option<Value> {
        let versions: Vec<Value> = versions_of(group)
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        let preferred = versions.first()?.clone();
        Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
    };
    let resource_list = |group: &str, version: &str| -> Option<Value> {
        let mut resources = Vec::new();
        for r in st
            .registered
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            resources.push(json!({
                "name": r.plural,
                "singularName": r.kind.to_lowercase(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            }));
            if r.has_status() {
                resources.push(json!({
                    "name": format!("{}/status", r.plural),
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        if resources.is_empty() && !(group.is_empty() && version == "v1") {
            return None;
        }
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    };
    let body = match segs {
        ["healthz" | "livez" | "readyz"] => {
            return Ok(Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("ok"))
                .unwrap_or_default());
        }
        ["version"] => json!({
            "major": "1", "minor": "34", "gitVersion": "v1.34.0-fake",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
            "platform": "linux/amd64",
        }),
        ["api"] => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}],
        }),
        ["api", v] => resource_list("", v).ok_or_else(ApiError::no_route)?,
        ["apis"] => {
            let mut groups: Vec<String> = Vec::new();
            for r in st.registered.iter().filter(|r| !r.group.is_empty()) {
                if !groups.contains(&r.group) {
                    groups.push(r.group.clone());
                }
            }
            let groups: Vec<Value> = groups.iter().filter_map(|g| group_json(g)).collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["apis", g] => {
            let mut group = group_json(g).ok_or_else(ApiError::no_route)?;
            group["kind"] = json!("APIGroup");
            group["apiVersion"] = json!("v1");
            group
        }
        ["apis", g, v] => resource_list(g, v).ok_or_else(ApiError::no_route)?,
        _ => return Err(ApiError::no_route()),
    };
    Ok(json_response(StatusCode::OK, &body))
}

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

/// What one watch stream sends.
struct WatchSpec {
    res: Resource,
    selection: Selection,
    meta_only: bool,
}

impl WatchSpec {
    fn event(&self, kind: &str, obj: Value) -> Value {
        let obj = if self.meta_only {
            partial_metadata(obj)
        } else {
            obj
        };
        json!({"type": kind, "object": obj})
    }

    /// The event a change means for this watch, if any: an object that enters
    /// or leaves the selection is ADDED or DELETED, as on a real server.
    fn render(&self, change: &Change) -> Option<Value> {
        if change.storage != self.res.storage() {
            return None;
        }
        let now = present(&self.res, &change.obj);
        let matches_now = self.selection.matches(&now);
        let kind = match change.kind {
            ChangeType::Added if matches_now => "ADDED",
            ChangeType::Deleted if matches_now => "DELETED",
            ChangeType::Modified => {
                let matched_before = change
                    .prev
                    .as_ref()
                    .is_some_and(|p| self.selection.matches(&present(&self.res, p)));
                match (matched_before, matches_now) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
            _ => return None,
        };
        Some(self.event(kind, now))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let (api_version, kind) = if self.meta_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            )
        } else {
            (self.res.api_version(), self.res.kind.clone())
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": metadata}})
    }
}

fn expired_event(requested: u64, compacted: u64) -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {requested} ({compacted})"),
        "reason": "Expired", "code": 410,
    }})
}

fn watch(
    shared: &Arc<Shared>,
    req: &Req,
    res: &Resource,
    namespace: Option<&str>,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let spec = WatchSpec {
        res: res.clone(),
        selection: Selection::parse(
            res,
            namespace,
            req.param("labelSelector"),
            req.param("fieldSelector"),
        )?,
        meta_only,
    };
    let timeout = match req.param("timeoutSeconds") {
        None | Some("") => DEFAULT_WATCH_TIMEOUT_SECS,
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {s:?}")))?,
    };
    let from = match req.param("resourceVersion") {
        None | Some("" | "0") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))?,
        ),
    };
    let initial_events = req.flag("sendInitialEvents");
    let bookmarks = req.flag("allowWatchBookmarks");

    // Snapshot and subscribe under one lock so no change falls in between.
    let (first, ended, cursor, pulse, seen) = {
        let st = shared.lock();
        let pulse = shared.pulse.subscribe();
        let seen = *pulse.borrow();
        let mut first = Vec::new();
        let mut ended = false;
        match from {
            Some(rv) if !initial_events => {
                if rv < st.compacted {
                    first.push(expired_event(rv, st.compacted));
                    ended = true;
                } else {
                    first.extend(st.changes_after(rv).iter().filter_map(|c| spec.render(c)));
                }
            }
            _ => {
                for obj in st.stored(res, namespace) {
                    let obj = present(res, obj);
                    if spec.selection.matches(&obj) {
                        first.push(spec.event("ADDED", obj));
                    }
                }
                if initial_events {
                    first.push(spec.bookmark(st.rv, true));
                }
            }
        }
        (first, ended, st.rv, pulse, seen)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(stream_watch(WatchTask {
        shared: shared.clone(),
        spec,
        tx,
        first,
        ended,
        cursor,
        pulse,
        seen,
        timeout: Duration::from_secs(timeout),
        bookmarks,
    }));
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    }));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_default())
}

struct WatchTask {
    shared: Arc<Shared>,
    spec: WatchSpec,
    tx: mpsc::Sender<Bytes>,
    /// Events to send first (initial state or history, or the 410 error).
    first: Vec<Value>,
    /// The stream ends after `first`.
    ended: bool,
    /// History up to here has been sent.
    cursor: u64,
    pulse: watch::Receiver<Pulse>,
    seen: Pulse,
    timeout: Duration,
    bookmarks: bool,
}

/// Counts open watches for [`FakeApi::open_watches`].
struct OpenWatch(Arc<Shared>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn send_line(tx: &mpsc::Sender<Bytes>, event: &Value) -> bool {
    let mut line = event.to_string().into_bytes();
    line.push(b'\n');
    tx.send(Bytes::from(line)).await.is_ok()
}

async fn stream_watch(mut w: WatchTask) {
    w.shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let _open = OpenWatch(w.shared.clone());
    for event in std::mem::take(&mut w.first) {
        if !send_line(&w.tx, &event).await {
            return;
        }
    }
    if w.ended {
        return;
    }
    let deadline = tokio::time::sleep(w.timeout);
    tokio::pin!(deadline);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = w.tx.closed() => return,
            _ = ticker.tick(), if w.bookmarks => {
                if !send_line(&w.tx, &w.spec.bookmark(w.cursor, false)).await {
                    return;
                }
            }
            changed = w.pulse.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *w.pulse.borrow_and_update();
                if now.stopped || now.down {
                    return;
                }
                if now.expired != w.seen.expired {
                    let compacted = w.shared.lock().compacted;
                    let _ = send_line(&w.tx, &expired_event(w.cursor, compacted)).await;
                    return;
                }
                if now.registry != w.seen.registry && !w.shared.lock().is_registered(&w.spec.res) {
                    return;
                }
                w.seen = now;
                let (changes, rv) = {
                    let st = w.shared.lock();
                    (st.changes_after(w.cursor), st.rv)
                };
                for change in &changes {
                    if let Some(event) = w.spec.render(change)
                        && !send_line(&w.tx, &event).await
                    {
                        return;
                    }
                }
                w.cursor = rv;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A random version-4-shaped UUID.
fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// `generateName` suffix, from the alphabet the real server uses.
fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| ALPHABET[(random_u64() % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// Now as RFC 3339, second precision, `Z`.
fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
