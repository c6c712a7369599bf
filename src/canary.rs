//! The parts of a Flagger `Canary` (`flagger.app/v1beta1`) that canary-notifier reads.
//!
//! Admission works on the raw JSON object so that fields we do not model are never
//! dropped, reordered or rewritten: entries are read leniently and a field of the
//! wrong JSON type becomes a [`TypeMismatch`] instead of failing the whole object.

use serde_json::{Map, Value};
use std::fmt;

pub const GROUP: &str = "flagger.app";
pub const VERSION: &str = "v1beta1";
pub const KIND: &str = "Canary";
pub const API_VERSION: &str = "flagger.app/v1beta1";

/// Whether a parsed document is a Flagger Canary (any served version of the group).
pub fn is_canary(object: &Value) -> bool {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    kind == KIND && api_version.split('/').next() == Some(GROUP)
}

/// The two places Flagger reads webhooks from. `canaryAnalysis` is the deprecated
/// alias that Flagger still reads when `analysis` is absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalysisField {
    Analysis,
    CanaryAnalysis,
}

impl AnalysisField {
    pub const ALL: [AnalysisField; 2] = [AnalysisField::Analysis, AnalysisField::CanaryAnalysis];

    pub fn key(self) -> &'static str {
        match self {
            AnalysisField::Analysis => "analysis",
            AnalysisField::CanaryAnalysis => "canaryAnalysis",
        }
    }
}

/// Where a webhook entry sits, e.g. `spec.analysis.webhooks[1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookLocation {
    pub field: AnalysisField,
    pub index: usize,
}

impl WebhookLocation {
    /// Field path for messages: `spec.analysis.webhooks[1].url`.
    pub fn path(&self, key: &str) -> String {
        format!("spec.{}.webhooks[{}].{key}", self.field.key(), self.index)
    }

    /// JSON pointer for patches: `/spec/analysis/webhooks/1/url`.
    pub fn pointer(&self, key: &str) -> String {
        format!("/spec/{}/webhooks/{}/{key}", self.field.key(), self.index)
    }
}

impl fmt::Display for WebhookLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec.{}.webhooks[{}]", self.field.key(), self.index)
    }
}

/// Flagger's webhook types (`CanaryWebhook.type`); `""` means `rollout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookType {
    Unset,
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmPromotion,
    PostRollout,
    Event,
    Rollback,
    ConfirmTrafficIncrease,
}

impl WebhookType {
    pub const ALL: [WebhookType; 9] = [
        WebhookType::Unset,
        WebhookType::ConfirmRollout,
        WebhookType::PreRollout,
        WebhookType::Rollout,
        WebhookType::ConfirmPromotion,
        WebhookType::PostRollout,
        WebhookType::Event,
        WebhookType::Rollback,
        WebhookType::ConfirmTrafficIncrease,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookType::Unset => "",
            WebhookType::ConfirmRollout => "confirm-rollout",
            WebhookType::PreRollout => "pre-rollout",
            WebhookType::Rollout => "rollout",
            WebhookType::ConfirmPromotion => "confirm-promotion",
            WebhookType::PostRollout => "post-rollout",
            WebhookType::Event => "event",
            WebhookType::Rollback => "rollback",
            WebhookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookType> {
        WebhookType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// `"", confirm-rollout, ...` for messages.
    pub fn list() -> String {
        WebhookType::ALL
            .iter()
            .map(|t| format!("\"{}\"", t.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A field (or container) whose JSON type is not the one Flagger's schema declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeMismatch {
    pub path: String,
    pub expected: &'static str,
}

/// One entry of a webhooks list, borrowed from the raw object.
#[derive(Clone, Copy, Debug)]
pub struct Webhook<'a> {
    pub location: WebhookLocation,
    raw: &'a Map<String, Value>,
}

impl<'a> Webhook<'a> {
    /// Present and non-null: Kubernetes treats `null` like an absent field.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.raw.get(key).filter(|v| !v.is_null())
    }

    fn mismatch(&self, key: &str, expected: &'static str) -> TypeMismatch {
        TypeMismatch {
            path: self.location.path(key),
            expected,
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>, TypeMismatch> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.mismatch(key, "a string")),
        }
    }

    pub fn integer(&self, key: &str) -> Result<Option<i64>, TypeMismatch> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.mismatch(key, "an integer")),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, TypeMismatch> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.mismatch(key, "true or false")),
        }
    }

    /// `metadata`: a map of strings to strings.
    pub fn string_map(&self, key: &str) -> Result<Option<Vec<(&'a str, &'a str)>>, TypeMismatch> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.as_str(), s.as_str())),
                    _ => Err(self.mismatch(key, "a map of strings to strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.mismatch(key, "a map of strings to strings")),
        }
    }

    /// The declared type; a missing or non-string `type` reads as `""` (Flagger's `rollout`).
    pub fn type_str(&self) -> &'a str {
        self.get("type").and_then(Value::as_str).unwrap_or("")
    }

    pub fn is_event(&self) -> bool {
        self.type_str() == WebhookType::Event.as_str()
    }
}

/// Every webhook entry of a canary object, from `spec.analysis.webhooks` then the
/// legacy `spec.canaryAnalysis.webhooks`, plus any container of the wrong type.
pub fn webhooks(object: &Value) -> (Vec<Webhook<'_>>, Vec<TypeMismatch>) {
    let mut entries = Vec::new();
    let mut mismatches = Vec::new();
    let spec = match object.get("spec") {
        None | Some(Value::Null) => return (entries, mismatches),
        Some(Value::Object(spec)) => spec,
        Some(_) => {
            mismatches.push(TypeMismatch {
                path: "spec".into(),
                expected: "an object",
            });
            return (entries, mismatches);
        }
    };
    for field in AnalysisField::ALL {
        let analysis = match spec.get(field.key()) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(analysis)) => analysis,
            Some(_) => {
                mismatches.push(TypeMismatch {
                    path: format!("spec.{}", field.key()),
                    expected: "an object",
                });
                continue;
            }
        };
        let list = match analysis.get("webhooks") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(list)) => list,
            Some(_) => {
                mismatches.push(TypeMismatch {
                    path: format!("spec.{}.webhooks", field.key()),
                    expected: "a list",
                });
                continue;
            }
        };
        for (index, item) in list.iter().enumerate() {
            let location = WebhookLocation { field, index };
            match item {
                Value::Object(raw) => entries.push(Webhook { location, raw }),
                _ => mismatches.push(TypeMismatch {
                    path: location.to_string(),
                    expected: "an object",
                }),
            }
        }
    }
    (entries, mismatches)
}

/// `namespace/name` of an object, for messages and logs.
pub fn object_ref(object: &Value) -> String {
    let meta = object.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    match (field("namespace"), field("name").or(field("generateName"))) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_string(),
        (_, None) => "<unnamed>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_lists_in_order_and_reports_wrong_shapes() {
        let canary = json!({"spec": {
            "analysis": {"webhooks": [{"name": "a", "type": "event"}, "oops", {"name": "b"}]},
            "canaryAnalysis": {"webhooks": [{"name": "c"}]}
        }});
        let (hooks, bad) = webhooks(&canary);
        let paths: Vec<String> = hooks.iter().map(|h| h.location.to_string()).collect();
        assert_eq!(
            paths,
            [
                "spec.analysis.webhooks[0]",
                "spec.analysis.webhooks[2]",
                "spec.canaryAnalysis.webhooks[0]"
            ]
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].path, "spec.analysis.webhooks[1]");
        assert!(hooks[0].is_event());
        assert!(!hooks[1].is_event());
    }

    #[test]
    fn wrong_container_types_are_reported_not_fatal() {
        let cases = [
            (json!({"spec": 3}), "spec"),
            (json!({"spec": {"analysis": []}}), "spec.analysis"),
            (
                json!({"spec": {"analysis": {"webhooks": {}}}}),
                "spec.analysis.webhooks",
            ),
            (
                json!({"spec": {"canaryAnalysis": {"webhooks": "x"}}}),
                "spec.canaryAnalysis.webhooks",
            ),
        ];
        for (object, path) in cases {
            let (hooks, bad) = webhooks(&object);
            assert!(hooks.is_empty());
            assert_eq!(bad.len(), 1, "{object}");
            assert_eq!(bad[0].path, path);
        }
    }

    #[test]
    fn typed_accessors() {
        let canary = json!({"spec": {"analysis": {"webhooks": [{
            "name": "a", "url": 5, "retries": 2, "timeout": null, "disableTLS": "yes",
            "metadata": {"k": "v"}, "muteAlert": true
        }]}}});
        let (hooks, _) = webhooks(&canary);
        let h = hooks[0];
        assert_eq!(h.string("name"), Ok(Some("a")));
        assert_eq!(
            h.string("url").unwrap_err().path,
            "spec.analysis.webhooks[0].url"
        );
        assert_eq!(h.string("timeout"), Ok(None));
        assert_eq!(h.integer("retries"), Ok(Some(2)));
        assert!(h.boolean("disableTLS").is_err());
        assert_eq!(h.boolean("muteAlert"), Ok(Some(true)));
        assert_eq!(h.string_map("metadata"), Ok(Some(vec![("k", "v")])));
        assert_eq!(h.type_str(), "");
    }

    #[test]
    fn webhook_types_round_trip() {
        for t in WebhookType::ALL {
            assert_eq!(WebhookType::parse(t.as_str()), Some(t));
        }
        assert_eq!(WebhookType::parse("Event"), None);
        assert!(WebhookType::list().starts_with("\"\", \"confirm-rollout\""));
    }

    #[test]
    fn recognises_canaries() {
        assert!(is_canary(
            &json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary"})
        ));
        assert!(!is_canary(
            &json!({"apiVersion": "apps/v1", "kind": "Canary"})
        ));
        assert!(!is_canary(
            &json!({"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider"})
        ));
    }
}
