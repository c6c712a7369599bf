//! What has been notified for one canary, persisted on the Canary itself in the
//! annotation `canary-notifier.dev/notified` (written with server-side apply under
//! our own field manager), so restarts and failovers neither repeat nor skip.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const ANNOTATION: &str = "canary-notifier.dev/notified";
pub const FIELD_MANAGER: &str = "canary-notifier";

/// The last Kubernetes Event occurrence forwarded: its time, plus every occurrence
/// at exactly that time (Event times have one-second precision).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventWatermark {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifiedState {
    /// The phase last accounted for.
    #[serde(default)]
    pub phase: String,
    /// The revision (see `CanaryView::revision`) at that phase.
    #[serde(default)]
    pub revision: String,
    /// The revision last announced by "initialized" or "new revision".
    #[serde(default)]
    pub announced: String,
    /// When the current rollout entered Progressing (for the progress-deadline reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressing_since: Option<String>,
    #[serde(default)]
    pub events: EventWatermark,
}

impl NotifiedState {
    /// The state stored on `object`: `Ok(None)` when there is none, `Err` when the
    /// annotation is unreadable (someone edited it by hand).
    pub fn read(object: &Value) -> Result<Option<NotifiedState>, String> {
        let Some(raw) = object
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(ANNOTATION))
        else {
            return Ok(None);
        };
        let text = raw.as_str().ok_or("the annotation is not a string")?;
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The server-side apply body that records this state and nothing else.
    pub fn apply_patch(&self, name: &str, namespace: &str) -> Value {
        serde_json::json!({
            "apiVersion": crate::canary::API_VERSION,
            "kind": crate::canary::KIND,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": { ANNOTATION: self.to_annotation() },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_the_annotation() {
        let state = NotifiedState {
            phase: "Succeeded".into(),
            revision: "0a1b2c3d".into(),
            announced: "0a1b2c3d".into(),
            progressing_since: Some("2026-11-27T06:00:00Z".into()),
            events: EventWatermark {
                time: Some("2026-11-27T06:05:00Z".into()),
                seen: vec!["u1/2".into()],
            },
        };
        let patch = state.apply_patch("podinfo", "test");
        assert_eq!(patch["metadata"]["name"], "podinfo");
        let object = json!({"metadata": {"annotations": {ANNOTATION: patch["metadata"]["annotations"][ANNOTATION]}}});
        assert_eq!(NotifiedState::read(&object), Ok(Some(state)));
        assert_eq!(NotifiedState::read(&json!({"metadata": {}})), Ok(None));
        assert!(
            NotifiedState::read(&json!({"metadata": {"annotations": {ANNOTATION: "{"}}})).is_err()
        );
        // Unknown and missing fields are tolerated (older or newer writers).
        let object =
            json!({"metadata": {"annotations": {ANNOTATION: r#"{"phase":"Failed","future":1}"#}}});
        assert_eq!(
            NotifiedState::read(&object).unwrap().unwrap().phase,
            "Failed"
        );
    }
}
