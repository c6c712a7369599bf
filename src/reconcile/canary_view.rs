//! What the reconciler reads from a Canary, taken leniently from the raw object so
//! that an unexpected shape degrades a field, never the whole canary.

use crate::canary::{self, AnalysisField};
use serde_json::Value;
use std::time::SystemTime;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CanaryView {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub created: Option<SystemTime>,
    /// `status.phase`; "" before Flagger has looked at the canary.
    pub phase: String,
    /// Changes whenever Flagger would see a new revision: FNV-32a over
    /// `status.lastAppliedSpec` and `status.trackedConfigs`. Also the payload `checksum`.
    pub revision: String,
    pub failed_checks: i64,
    /// `analysis.threshold`, 1 when unset or not positive (Flagger's rule).
    pub threshold: i64,
    pub progress_deadline_seconds: i64,
    /// `<Kind>/<name>.<namespace>`
    pub target: String,
    pub target_kind: String,
    pub traffic_routing: Option<String>,
    pub skip_analysis: bool,
    pub last_transition_time: Option<SystemTime>,
    /// The `Promoted` condition's message.
    pub condition_message: Option<String>,
    /// Every confirm-rollout / confirm-promotion hook has `muteAlert: true`.
    pub mute_waiting: bool,
    pub mute_waiting_promotion: bool,
}

/// RFC 3339 as Kubernetes writes it (`2026-11-27T06:00:00Z`).
pub fn parse_time(value: Option<&Value>) -> Option<SystemTime> {
    value
        .and_then(Value::as_str)
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
}

pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// FNV-1a, 32 bit: small, stable across releases and platforms.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn analysis(object: &Value) -> Option<&Value> {
    let spec = object.get("spec")?;
    AnalysisField::ALL
        .iter()
        .find_map(|f| spec.get(f.key()).filter(|a| a.is_object()))
}

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_i64)
}

fn str_of(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("")
}

/// Flagger's `Traffic routing` field, or None for a canary without weights.
fn traffic_routing(analysis: Option<&Value>) -> Option<String> {
    let a = analysis?;
    let max_weight = int(a.get("maxWeight")).unwrap_or(0);
    let has_match = a
        .get("match")
        .and_then(Value::as_array)
        .is_some_and(|m| !m.is_empty());
    let iterations = int(a.get("iterations")).unwrap_or(0);
    let step_weights: Vec<String> = a
        .get("stepWeights")
        .and_then(Value::as_array)
        .map(|w| {
            w.iter()
                .filter_map(Value::as_i64)
                .map(|w| w.to_string())
                .collect()
        })
        .unwrap_or_default();
    let step_weight = int(a.get("stepWeight")).unwrap_or(0);
    if has_match && iterations > 0 {
        Some("A/B Testing".into())
    } else if iterations > 0 {
        Some("Blue/Green".into())
    } else if !step_weights.is_empty() {
        Some(format!(
            "Weight steps: {} max: {max_weight}",
            step_weights.join(",")
        ))
    } else if step_weight > 0 {
        Some(format!("Weight step: {step_weight} max: {max_weight}"))
    } else {
        None
    }
}

fn all_muted(object: &Value, hook_type: &str) -> bool {
    let (hooks, _) = canary::webhooks(object);
    let mut of_type = hooks
        .iter()
        .filter(|h| h.type_str() == hook_type)
        .peekable();
    of_type.peek().is_some() && of_type.all(|h| h.boolean("muteAlert").ok().flatten() == Some(true))
}

impl CanaryView {
    pub fn from_object(object: &Value) -> CanaryView {
        let meta = object.get("metadata");
        let status = object.get("status");
        let spec = object.get("spec");
        let analysis = analysis(object);
        let name = str_of(meta.and_then(|m| m.get("name"))).to_string();
        let namespace = str_of(meta.and_then(|m| m.get("namespace"))).to_string();
        let target_ref = spec.and_then(|s| s.get("targetRef"));
        let target_kind = str_of(target_ref.and_then(|t| t.get("kind"))).to_string();
        let target_name = str_of(target_ref.and_then(|t| t.get("name")));
        let revision_input = serde_json::json!({
            "lastAppliedSpec": status.and_then(|s| s.get("lastAppliedSpec")),
            "trackedConfigs": status.and_then(|s| s.get("trackedConfigs")),
        });
        let has_revision = status
            .and_then(|s| s.get("lastAppliedSpec"))
            .is_some_and(|v| !v.is_null());
        let condition_message = status
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("Promoted"))
            })
            .and_then(|c| c.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let threshold = int(analysis.and_then(|a| a.get("threshold"))).unwrap_or(0);
        CanaryView {
            uid: str_of(meta.and_then(|m| m.get("uid"))).to_string(),
            created: parse_time(meta.and_then(|m| m.get("creationTimestamp"))),
            phase: str_of(status.and_then(|s| s.get("phase"))).to_string(),
            revision: if has_revision {
                // serde_json's maps are sorted, so this is canonical.
                format!("{:08x}", fnv32a(revision_input.to_string().as_bytes()))
            } else {
                String::new()
            },
            failed_checks: int(status.and_then(|s| s.get("failedChecks"))).unwrap_or(0),
            threshold: if threshold <= 0 { 1 } else { threshold },
            progress_deadline_seconds: int(spec.and_then(|s| s.get("progressDeadlineSeconds")))
                .filter(|d| *d > 0)
                .unwrap_or(600),
            target: format!("{target_kind}/{target_name}.{namespace}"),
            target_kind,
            traffic_routing: traffic_routing(analysis),
            skip_analysis: spec
                .and_then(|s| s.get("skipAnalysis"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            last_transition_time: parse_time(status.and_then(|s| s.get("lastTransitionTime"))),
            condition_message,
            mute_waiting: all_muted(object, "confirm-rollout"),
            mute_waiting_promotion: all_muted(object, "confirm-promotion"),
            name,
            namespace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_flagger_canary() {
        let object = json!({
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1", "creationTimestamp": "2026-11-27T06:00:00Z"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"}, "progressDeadlineSeconds": 60,
                     "analysis": {"threshold": 0, "stepWeight": 10, "maxWeight": 50, "webhooks": [
                        {"name": "a", "type": "confirm-rollout", "url": "http://x/", "muteAlert": true}]}},
            "status": {"phase": "Progressing", "failedChecks": 2, "lastAppliedSpec": "5d8b7c", "trackedConfigs": {"cm": "1"},
                       "lastTransitionTime": "2026-11-27T06:01:00Z",
                       "conditions": [{"type": "Promoted", "status": "Unknown", "message": "New revision detected, progressing canary analysis."}]}
        });
        let v = CanaryView::from_object(&object);
        assert_eq!(v.phase, "Progressing");
        assert_eq!(v.threshold, 1, "threshold 0 means 1");
        assert_eq!(v.progress_deadline_seconds, 60);
        assert_eq!(v.target, "Deployment/podinfo.test");
        assert_eq!(
            v.traffic_routing.as_deref(),
            Some("Weight step: 10 max: 50")
        );
        assert!(v.mute_waiting && !v.mute_waiting_promotion);
        assert_eq!(v.revision.len(), 8);
        let mut changed = object.clone();
        changed["status"]["trackedConfigs"]["cm"] = json!("2");
        assert_ne!(
            CanaryView::from_object(&changed).revision,
            v.revision,
            "tracked configs are part of the revision"
        );
        changed["status"]["phase"] = json!("Succeeded");
        changed["status"]["trackedConfigs"]["cm"] = json!("1");
        assert_eq!(
            CanaryView::from_object(&changed).revision,
            v.revision,
            "phase is not"
        );
        assert_eq!(
            v.created.map(format_time).as_deref(),
            Some("2026-11-27T06:00:00Z")
        );
    }

    #[test]
    fn routing_descriptions() {
        let cases = [
            (
                json!({"iterations": 10, "match": [{"headers": {}}]}),
                Some("A/B Testing"),
            ),
            (json!({"iterations": 10}), Some("Blue/Green")),
            (
                json!({"stepWeights": [1, 5, 10], "maxWeight": 10}),
                Some("Weight steps: 1,5,10 max: 10"),
            ),
            (json!({"stepWeight": 5}), Some("Weight step: 5 max: 0")),
            (json!({}), None),
        ];
        for (a, want) in cases {
            assert_eq!(traffic_routing(Some(&a)).as_deref(), want, "{a}");
        }
    }

    #[test]
    fn empty_objects_do_not_panic() {
        for object in [json!(null), json!({}), json!({"spec": 1, "status": []})] {
            let v = CanaryView::from_object(&object);
            assert_eq!(v.phase, "");
            assert_eq!(v.revision, "");
        }
    }

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9cf968);
    }
}
