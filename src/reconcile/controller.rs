//! The controller: for each Canary, work out what is owed (chat alerts for its
//! transitions, its Kubernetes Events for event webhooks), deliver it in order, and
//! record each delivered item on the Canary before moving to the next.
//!
//! Delivery, then record: a crash between the two is the one window in which an
//! item can be sent twice (it is sent again after restart). Nothing is recorded
//! before it is delivered, so nothing is lost.

use super::canary_view::CanaryView;
use super::flagger_events::{self, Occurrence};
use super::notified_state::{FIELD_MANAGER, NotifiedState};
use super::transitions;
use crate::canary;
use crate::metrics::Metrics;
use crate::notify::destination::Delivery;
use crate::notify::dispatcher::Dispatcher;
use crate::notify::event::{CanaryEvent, EventType, Severity, now_ms};
use crate::notify::event_webhook::{EventHook, canary_event_hooks};
use crate::notify::routing;
use crate::notify::sender::{FailureKind, Outcome};
use crate::notify::settings::NotifySettings;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{
    Event as RecordedEvent, EventType as RecordedType, Recorder, Reporter,
};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Where event webhooks get their events from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsFrom {
    /// Every Kubernetes Event Flagger records on a canary (Flagger's behaviour).
    Kubernetes,
    /// The lifecycle transitions that chat channels get (for clusters without Flagger's Events).
    Transitions,
    Both,
}

#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Watch one namespace instead of all.
    pub namespace: Option<String>,
    pub events_from: EventsFrom,
    /// How long an undeliverable notification is retried before it is given up.
    pub max_age: Duration,
    /// First requeue delay after a failed delivery; doubles up to 5 minutes.
    pub requeue_backoff: Duration,
    /// Reporting instance for recorded Events (the pod name).
    pub instance: String,
}

pub fn canary_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(canary::GROUP, canary::VERSION, canary::KIND),
        "canaries",
    )
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot record what was notified: {0}")]
    Persist(#[source] kube::Error),
    #[error("not delivered yet: {0}")]
    Undelivered(String),
    #[error("cannot read the canary: {0}")]
    Object(String),
}

impl Error {
    /// A fixed, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Persist(_) => "persist",
            Error::Undelivered(_) => "undelivered",
            Error::Object(_) => "object",
        }
    }
}

/// Delivery progress of one item that has not fully succeeded yet (memory only).
struct Progress {
    first_attempt: Instant,
    delivered: HashSet<u32>,
}

pub struct Context {
    client: Client,
    resource: ApiResource,
    settings: ControllerSettings,
    notify: NotifySettings,
    dispatcher: Dispatcher,
    recorder: Recorder,
    metrics: Metrics,
    events: Store<CoreEvent>,
    progress: Mutex<HashMap<String, Progress>>,
    failures: Mutex<HashMap<String, u32>>,
    warned: Mutex<HashSet<(String, i64)>>,
    /// What this term last recorded per canary uid. Only the leader writes the
    /// record, so within a term this is authoritative, while the watch cache may
    /// still show the object from before our own write.
    written: Mutex<HashMap<String, NotifiedState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Stable in-memory identity of a destination (its URL included, never shown).
fn destination_id(d: &Delivery) -> u32 {
    super::canary_view::fnv32a(format!("{:?}", d.destination.queue_key()).as_bytes())
}

impl Context {
    async fn record_warning(&self, object: &DynamicObject, reason: &str, note: String) {
        // Event notes are limited to 1 KiB.
        let note: String = note.chars().take(1000).collect();
        let event = RecordedEvent {
            type_: RecordedType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Notify".into(),
            secondary: None,
        };
        if let Err(e) = self
            .recorder
            .publish(&event, &object.object_ref(&self.resource))
            .await
        {
            tracing::warn!(error = %e, reason, "cannot record a Warning Event on the canary");
        }
    }

    /// Delivers every delivery of one item. `Ok` once all are delivered, or given up
    /// after `max_age` (with a Warning Event); `Err` to retry later.
    async fn deliver(
        &self,
        object: &DynamicObject,
        item: &str,
        deliveries: Vec<Delivery>,
    ) -> Result<(), Error> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let key = format!("{}/{item}", object.metadata.uid.as_deref().unwrap_or(""));
        let (first_attempt, done) = {
            let mut progress = lock(&self.progress);
            let p = progress.entry(key.clone()).or_insert_with(|| Progress {
                first_attempt: Instant::now(),
                delivered: HashSet::new(),
            });
            (p.first_attempt, p.delivered.clone())
        };
        let mut waiting = Vec::new();
        let mut failed: Vec<(&'static str, String)> = Vec::new();
        let mut refused = Vec::new();
        for delivery in deliveries {
            let id = destination_id(&delivery);
            if done.contains(&id) {
                continue;
            }
            let channel = delivery.destination.channel.as_str();
            match self.dispatcher.submit(delivery) {
                Ok(report) => waiting.push((id, channel, report)),
                Err(full) => failed.push((channel, full.to_string())),
            }
        }
        let mut newly_delivered = Vec::new();
        for (id, channel, report) in waiting {
            match report.await {
                Ok(r) if r.delivered() => newly_delivered.push(id),
                // A blocked destination can never succeed: say so once, do not retry.
                Ok(r)
                    if matches!(
                        r.outcome,
                        Outcome::Failed {
                            reason: FailureKind::Refused,
                            ..
                        }
                    ) =>
                {
                    newly_delivered.push(id);
                    refused.push(r.to_string());
                }
                Ok(r) => failed.push((channel, r.to_string())),
                Err(_) => failed.push((channel, "delivery cancelled".into())),
            }
        }
        {
            let mut progress = lock(&self.progress);
            if let Some(p) = progress.get_mut(&key) {
                p.delivered.extend(newly_delivered);
            }
        }
        for r in refused {
            self.record_warning(object, "NotificationRefused", r).await;
        }
        if failed.is_empty() {
            lock(&self.progress).remove(&key);
            return Ok(());
        }
        if first_attempt.elapsed() >= self.settings.max_age {
            lock(&self.progress).remove(&key);
            for (channel, detail) in failed {
                self.metrics.notification_given_up(channel);
                tracing::error!(item, %detail, "giving up on a notification after --max-notification-age");
                self.record_warning(
                    object,
                    "NotificationFailed",
                    format!("gave up after retrying: {detail}"),
                )
                .await;
            }
            return Ok(());
        }
        Err(Error::Undelivered(
            failed
                .into_iter()
                .map(|(_, d)| d)
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }

    async fn persist(&self, view: &CanaryView, state: &NotifiedState) -> Result<(), Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &view.namespace, &self.resource);
        let body = state.apply_patch(&view.name, &view.namespace);
        match api
            .patch(
                &view.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Deleted meanwhile: nothing left to record on.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(Error::Persist(e)),
        }
    }

    fn occurrences(&self, view: &CanaryView) -> Vec<Occurrence> {
        if self.settings.events_from == EventsFrom::Transitions {
            return Vec::new();
        }
        let horizon = SystemTime::now() - self.settings.max_age;
        self.events
            .state()
            .iter()
            // Cheap typed filter first: the store holds every canary's Events.
            .filter(|e| {
                e.involved_object.name.as_deref() == Some(view.name.as_str())
                    && e.involved_object.namespace.as_deref() == Some(view.namespace.as_str())
            })
            .filter_map(|e| serde_json::to_value(e.as_ref()).ok())
            .filter_map(|e| flagger_events::occurrence(&e))
            .filter(|o| {
                o.canary_namespace == view.namespace
                    && o.canary_name == view.name
                    && o.time >= horizon
            })
            .collect()
    }

    /// The canary's callable event hooks (empty: the global webhook applies), or None
    /// when it declares hooks but none may be called: then nothing is sent, since
    /// its own hooks replace the global one.
    async fn event_hooks(&self, object: &DynamicObject, value: &Value) -> Option<Vec<EventHook>> {
        let (hooks, rejected) = canary_event_hooks(value, &self.notify.policy);
        if !rejected.is_empty() {
            let key = (
                object.metadata.uid.clone().unwrap_or_default(),
                object.metadata.generation.unwrap_or(0),
            );
            if lock(&self.warned).insert(key) {
                let problems: Vec<String> =
                    rejected.iter().flat_map(|r| r.problems.clone()).collect();
                self.record_warning(
                    object,
                    "EventWebhookRejected",
                    format!(
                        "event webhooks that break the admission policy are never called: {}",
                        problems.join("; ")
                    ),
                )
                .await;
            }
        }
        if hooks.is_empty() && !rejected.is_empty() {
            None
        } else {
            Some(hooks)
        }
    }

    fn event_deliveries(
        &self,
        event: &CanaryEvent,
        hooks: &Option<Vec<EventHook>>,
    ) -> Vec<Delivery> {
        match hooks {
            Some(hooks) => routing::event_deliveries(event, hooks, &self.notify),
            None => Vec::new(),
        }
    }
}

fn chat_and_hooks(
    ctx: &Context,
    event: &CanaryEvent,
    hooks: &Option<Vec<EventHook>>,
    to_webhooks: bool,
) -> Vec<Delivery> {
    let mut deliveries = routing::chat_deliveries(event, &ctx.notify);
    if to_webhooks {
        deliveries.extend(ctx.event_deliveries(event, hooks));
    }
    deliveries
}

/// `flagger_canary_status`: 0 Progressing, 2 Failed, 1 otherwise.
fn status_value(phase: &str) -> i64 {
    match phase {
        "Progressing" => 0,
        "Failed" => 2,
        _ => 1,
    }
}

async fn reconcile(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled();
    let value = serde_json::to_value(object.as_ref()).map_err(|e| Error::Object(e.to_string()))?;
    let view = CanaryView::from_object(&value);
    let clock = SystemTime::now();
    let written = lock(&ctx.written).get(&view.uid).cloned();
    let stored = match written {
        Some(state) => Some(state),
        None => NotifiedState::read(&value).unwrap_or_else(|e| {
            tracing::warn!(canary = %format!("{}/{}", view.namespace, view.name), error = %e, "unreadable notification state; starting over");
            None
        }),
    };
    let occurrences = ctx.occurrences(&view);
    let mut state = match &stored {
        Some(s) => s.clone(),
        None => {
            let mut s = transitions::starting_state(&view, clock, ctx.settings.max_age);
            if !transitions::is_new(&view, clock, ctx.settings.max_age) {
                s.events = flagger_events::baseline(occurrences.clone());
            }
            s
        }
    };
    let hooks = ctx.event_hooks(&object, &value).await;
    let transitions_to_webhooks = ctx.settings.events_from != EventsFrom::Kubernetes;

    let plan = transitions::plan(&state, &view);
    for occasion in &plan.occasions {
        let event = occasion.event(&view, now_ms());
        let deliveries = chat_and_hooks(&ctx, &event, &hooks, transitions_to_webhooks);
        let item = format!(
            "transition/{:?}/{}/{}",
            occasion.kind, occasion.phase, view.revision
        );
        ctx.deliver(&object, &item, deliveries).await?;
        state = NotifiedState {
            events: state.events.clone(),
            ..occasion.state_after.clone()
        };
        ctx.persist(&view, &state).await?;
        tracing::info!(canary = %format!("{}/{}", view.namespace, view.name), message = %occasion.message, "notified");
    }
    state = NotifiedState {
        events: state.events.clone(),
        ..plan.final_state.clone()
    };

    for occurrence in flagger_events::pending(&state.events, occurrences) {
        let event = CanaryEvent {
            name: view.name.clone(),
            namespace: view.namespace.clone(),
            phase: view.phase.clone(),
            checksum: view.revision.clone(),
            message: occurrence.message.clone(),
            event_type: occurrence.event_type,
            severity: if occurrence.event_type == EventType::Warning {
                Severity::Warn
            } else {
                Severity::Info
            },
            timestamp_ms: occurrence
                .time
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            fields: Default::default(),
        };
        let deliveries = ctx.event_deliveries(&event, &hooks);
        ctx.deliver(&object, &format!("event/{}", occurrence.key), deliveries)
            .await?;
        state.events = flagger_events::advance(&state.events, &occurrence);
        ctx.persist(&view, &state).await?;
    }
    if stored.as_ref() != Some(&state) {
        ctx.persist(&view, &state).await?;
    }
    lock(&ctx.failures).remove(&view.uid);
    // A periodic look catches anything a missed watch event would hide.
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(object: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.metric_label());
    let uid = object.metadata.uid.clone().unwrap_or_default();
    let attempt = {
        let mut failures = lock(&ctx.failures);
        let n = failures.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = ctx
        .settings
        .requeue_backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(Duration::from_secs(300));
    tracing::warn!(
        canary = %format!("{}/{}", object.metadata.namespace.as_deref().unwrap_or(""), object.metadata.name.as_deref().unwrap_or("")),
        error = %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Fails when the Canary CRD is not installed, saying how to install it.
pub async fn check_crd(client: &Client, namespace: Option<&str>) -> anyhow::Result<()> {
    let resource = canary_resource();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
            "the Canary CRD (canaries.flagger.app, v1beta1) is not installed in this cluster: install Flagger, \
             or apply canary-notifier's copy with `kubectl apply -k manifests/components/crd`"
        ),
        Err(e) => Err(anyhow::Error::new(e).context("cannot list canaries")),
    }
}

/// Runs the controller until the future is dropped: the caller aborts it when this
/// replica stops being the leader.
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    notify: NotifySettings,
    dispatcher: Dispatcher,
    metrics: Metrics,
) {
    let resource = canary_resource();
    let (canaries, events_api): (Api<DynamicObject>, Api<CoreEvent>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced_with(client.clone(), ns, &resource),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all_with(client.clone(), &resource),
            Api::all(client.clone()),
        ),
    };
    let (events, writer) = reflector::store();
    let event_stream = reflector::reflector(
        writer,
        watcher(
            events_api,
            watcher::Config::default().fields("involvedObject.kind=Canary"),
        ),
    )
    .default_backoff()
    .applied_objects();
    let reporter = Reporter {
        controller: flagger_events::REPORTER.into(),
        instance: Some(settings.instance.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        resource: resource.clone(),
        settings,
        notify,
        dispatcher,
        metrics: metrics.clone(),
        events,
        progress: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        warned: Mutex::new(HashSet::new()),
        written: Mutex::new(HashMap::new()),
    });
    let mapper_resource = resource.clone();
    let controller = Controller::new_with(canaries, watcher::Config::default(), resource)
        .watches_stream_with(
            event_stream,
            move |event: CoreEvent| {
                let involved = event.involved_object;
                involved.name.map(|name| {
                    let r = ObjectRef::new_with(&name, mapper_resource.clone());
                    match involved.namespace {
                        Some(ns) => r.within(&ns),
                        None => r,
                    }
                })
            },
            (),
        );
    let store = controller.store();
    let metrics_task = tokio::spawn(async move {
        loop {
            let statuses: Vec<(String, String, i64)> = store
                .state()
                .iter()
                .filter_map(|c| serde_json::to_value(c.as_ref()).ok())
                .map(|c| {
                    let target = c["spec"]["targetRef"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    let namespace = c["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    (
                        target,
                        namespace,
                        status_value(c["status"]["phase"].as_str().unwrap_or("")),
                    )
                })
                .collect();
            metrics.set_canaries(&statuses);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    metrics_task.abort();
}
