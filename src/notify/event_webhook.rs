//! Event webhooks: Flagger's `CanaryWebhookPayload`, and the `type: event` hooks of
//! a canary that may be called (those that pass the admission rules).

use super::event::CanaryEvent;
use crate::admission::validate::validate;
use crate::canary;
use crate::destination_policy::DestinationPolicy;
use crate::flagger_duration;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// Flagger's default event webhook timeout, and what a missing `timeout` means.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The name Flagger gives the global event webhook.
pub const GLOBAL_HOOK_NAME: &str = "events";

#[derive(Serialize)]
struct Payload<'a> {
    name: &'a str,
    namespace: &'a str,
    phase: &'a str,
    checksum: &'a str,
    metadata: BTreeMap<&'a str, &'a str>,
}

/// `{name, namespace, phase, checksum, metadata: {eventMessage, eventType, timestamp, ...}}`.
/// A hook's own metadata is merged in but never overrides the three reserved keys.
/// Keys are sorted, as Go's encoder sorts map keys.
pub fn render(event: &CanaryEvent, extra: &BTreeMap<String, String>) -> Vec<u8> {
    let timestamp = event.timestamp_ms.to_string();
    let mut metadata: BTreeMap<&str, &str> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    metadata.insert("eventMessage", &event.message);
    metadata.insert("eventType", event.event_type.as_str());
    metadata.insert("timestamp", &timestamp);
    let payload = Payload {
        name: &event.name,
        namespace: &event.namespace,
        phase: &event.phase,
        checksum: &event.checksum,
        metadata,
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// An event webhook that may be called.
#[derive(Clone, PartialEq, Eq)]
pub struct EventHook {
    pub name: String,
    pub url: Url,
    pub timeout: Duration,
    /// `None`: the `--retries` default applies.
    pub retries: Option<u32>,
    pub disable_tls: bool,
    pub metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for EventHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHook")
            .field("name", &self.name)
            .field("url", &super::destination::redact(&self.url))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("disable_tls", &self.disable_tls)
            .finish_non_exhaustive()
    }
}

impl EventHook {
    /// The global `--event-webhook`, as Flagger builds it: name `events`, default timeout.
    pub fn global(url: Url) -> Self {
        EventHook {
            name: GLOBAL_HOOK_NAME.into(),
            url,
            timeout: DEFAULT_TIMEOUT,
            retries: None,
            disable_tls: false,
            metadata: BTreeMap::new(),
        }
    }
}

/// A `type: event` hook that breaks the admission rules and is never called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedHook {
    pub field: String,
    pub problems: Vec<String>,
}

/// The canary's event hooks, split into callable ones and rejected ones. Only
/// problems that make the call unsafe or wrong reject a hook; a bad `name` does not.
pub fn canary_event_hooks(
    object: &Value,
    policy: &DestinationPolicy,
) -> (Vec<EventHook>, Vec<RejectedHook>) {
    let findings = validate(object, policy);
    let (hooks, _) = canary::webhooks(object);
    let mut usable = Vec::new();
    let mut rejected = Vec::new();
    for hook in hooks.iter().filter(|h| h.is_event()) {
        let prefix = hook.location.to_string();
        let name_field = hook.location.path("name");
        let problems: Vec<String> = findings
            .errors
            .iter()
            .filter(|p| {
                p.field != name_field
                    && (p.field == prefix || p.field.starts_with(&format!("{prefix}.")))
            })
            .map(ToString::to_string)
            .collect();
        let url = hook
            .string("url")
            .ok()
            .flatten()
            .and_then(|u| Url::parse(u.trim()).ok());
        match (problems.is_empty(), url) {
            (true, Some(url)) => usable.push(EventHook {
                name: hook
                    .string("name")
                    .ok()
                    .flatten()
                    .unwrap_or_default()
                    .to_string(),
                url,
                timeout: hook
                    .string("timeout")
                    .ok()
                    .flatten()
                    .and_then(flagger_duration::parse)
                    .unwrap_or(DEFAULT_TIMEOUT),
                retries: hook
                    .integer("retries")
                    .ok()
                    .flatten()
                    .and_then(|r| u32::try_from(r).ok()),
                disable_tls: hook.boolean("disableTLS").ok().flatten().unwrap_or(false),
                metadata: hook
                    .string_map("metadata")
                    .ok()
                    .flatten()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            (_, _) => rejected.push(RejectedHook {
                field: prefix,
                problems,
            }),
        }
    }
    (usable, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::{AlertFields, EventType, Severity};
    use serde_json::json;

    fn event() -> CanaryEvent {
        CanaryEvent {
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: "Progressing".into(),
            checksum: "6d4c8b5f7".into(),
            message: "New revision detected! Scaling up podinfo.test".into(),
            event_type: EventType::Normal,
            severity: Severity::Info,
            timestamp_ms: 1_578_607_635_167,
            fields: AlertFields::default(),
        }
    }

    #[test]
    fn reserved_metadata_keys_cannot_be_overridden() {
        let extra: BTreeMap<String, String> = [
            ("eventType", "x"),
            ("timestamp", "0"),
            ("eventMessage", "y"),
            ("team", "payments"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let body: Value = serde_json::from_slice(&render(&event(), &extra)).unwrap();
        assert_eq!(
            body,
            json!({"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "6d4c8b5f7",
                   "metadata": {"eventMessage": "New revision detected! Scaling up podinfo.test",
                                "eventType": "Normal", "timestamp": "1578607635167", "team": "payments"}})
        );
    }

    #[test]
    fn only_hooks_passing_admission_are_callable() {
        let canary = json!({"spec": {"analysis": {"webhooks": [
            {"name": "ok", "type": "event", "url": "http://r.ns/x", "timeout": "3s", "retries": 2,
             "metadata": {"a": "b"}, "disableTLS": true},
            {"name": "defaults", "type": "event", "url": "https://r.example/"},
            {"name": "padded", "type": "event", "url": " https://r.example/ "},
            {"name": "ftp", "type": "event", "url": "ftp://r/"},
            {"name": "meta", "type": "event", "url": "http://169.254.169.254/"},
            {"name": "slow", "type": "event", "url": "http://r/", "timeout": "9m"},
            {"name": "ok", "type": "event", "url": "http://dup.ns/"},
            {"name": "gate", "type": "confirm-rollout", "url": "http://localhost/"}
        ]}}});
        let (usable, rejected) = canary_event_hooks(&canary, &DestinationPolicy::default());
        let names: Vec<&str> = usable.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["ok", "defaults", "ok"],
            "a duplicate name does not stop delivery"
        );
        assert_eq!(usable[0].timeout, Duration::from_secs(3));
        assert_eq!(usable[0].retries, Some(2));
        assert!(usable[0].disable_tls);
        assert_eq!(usable[0].metadata.get("a").map(String::as_str), Some("b"));
        assert_eq!(usable[1].timeout, DEFAULT_TIMEOUT);
        assert_eq!(usable[1].retries, None);
        assert_eq!(usable[1].url.as_str(), "https://r.example/");
        let fields: Vec<&str> = rejected.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.analysis.webhooks[2]",
                "spec.analysis.webhooks[3]",
                "spec.analysis.webhooks[4]",
                "spec.analysis.webhooks[5]"
            ]
        );
        assert!(rejected[2].problems[0].contains("link-local"));
        assert!(
            !format!("{:?}", usable[0]).contains("/x"),
            "Debug shows scheme and host only"
        );
    }
}
