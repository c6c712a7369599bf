//! The event model: one thing that happened to a canary, as plain data. Every
//! channel renders its payload from this with a pure function.

use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// Flagger's alert severities; chat colours follow them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Error,
}

/// The Kubernetes event type Flagger reports (`Warningf` and `Errorf` are both Warning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The optional fields Flagger attaches to some chat alerts (`alertMetadata()`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertFields {
    /// `<Kind>/<name>.<namespace>`
    pub target: Option<String>,
    pub failed_checks_threshold: Option<i64>,
    /// e.g. `600s`
    pub progress_deadline: Option<String>,
    /// e.g. `Weight step: 10 max: 50`
    pub traffic_routing: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryEvent {
    pub name: String,
    pub namespace: String,
    pub phase: String,
    pub checksum: String,
    pub message: String,
    pub event_type: EventType,
    pub severity: Severity,
    /// Unix time in milliseconds.
    pub timestamp_ms: u64,
    pub fields: AlertFields,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl CanaryEvent {
    /// `<name>.<namespace>`, how Flagger names a canary in chat.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// Chat fields in Flagger's order: Cluster, then the alert metadata.
    pub fn chat_fields(&self, cluster: Option<&str>) -> Vec<(&'static str, String)> {
        let f = &self.fields;
        let mut out = Vec::new();
        if let Some(c) = cluster.filter(|c| !c.is_empty()) {
            out.push(("Cluster", c.to_string()));
        }
        if let Some(t) = &f.target {
            out.push(("Target", t.clone()));
        }
        if let Some(t) = f.failed_checks_threshold {
            out.push(("Failed checks threshold", t.to_string()));
        }
        if let Some(p) = &f.progress_deadline {
            out.push(("Progress deadline", p.clone()));
        }
        if let Some(r) = &f.traffic_routing {
            out.push(("Traffic routing", r.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_fields_follow_flaggers_order() {
        let event = CanaryEvent {
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: "Initialized".into(),
            checksum: String::new(),
            message: "m".into(),
            event_type: EventType::Normal,
            severity: Severity::Info,
            timestamp_ms: 0,
            fields: AlertFields {
                target: Some("Deployment/podinfo.test".into()),
                failed_checks_threshold: Some(5),
                progress_deadline: Some("60s".into()),
                traffic_routing: Some("Weight step: 10 max: 50".into()),
            },
        };
        let names: Vec<&str> = event
            .chat_fields(Some("prod"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "Cluster",
                "Target",
                "Failed checks threshold",
                "Progress deadline",
                "Traffic routing"
            ]
        );
        assert!(
            event
                .chat_fields(Some(""))
                .iter()
                .all(|(n, _)| *n != "Cluster")
        );
        assert_eq!(event.qualified_name(), "podinfo.test");
    }
}
