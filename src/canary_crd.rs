//! The Canary CRD (`flagger.app/v1beta1`), for clusters that run canary-notifier
//! without Flagger (tests, demos). `canary-notifier crd` prints it; CI fails when the
//! committed copies drift from it. Never installed by default: it must not replace
//! Flagger's own CRD.
//!
//! Webhooks are modelled exactly (that is what admission checks); the rest of the
//! spec and status keeps unknown fields, so every Flagger canary is accepted.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "Canary",
    plural = "canaries",
    singular = "canary",
    shortname = "canary",
    category = "all",
    namespaced,
    status = "CanaryStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"string","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend","priority":1}"#,
    printcolumn = r#"{"name":"FailedChecks","type":"string","jsonPath":".status.failedChecks","priority":1}"#,
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.analysis.interval","priority":1}"#,
    printcolumn = r#"{"name":"Mirror","type":"boolean","jsonPath":".spec.analysis.mirror","priority":1}"#,
    printcolumn = r#"{"name":"StepWeight","type":"string","jsonPath":".spec.analysis.stepWeight","priority":1}"#,
    printcolumn = r#"{"name":"StepWeights","type":"string","jsonPath":".spec.analysis.stepWeights","priority":1}"#,
    printcolumn = r#"{"name":"MaxWeight","type":"string","jsonPath":".spec.analysis.maxWeight","priority":1}"#,
    printcolumn = r#"{"name":"LastTransitionTime","type":"string","jsonPath":".status.lastTransitionTime"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct CanarySpec {
    /// The workload under analysis.
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// Deprecated alias of `analysis`, still read by Flagger when `analysis` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_analysis: Option<Analysis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_analysis: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct Analysis {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weights: Option<Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<Webhook>>,
}

/// Flagger's `CanaryWebhook`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub name: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "confirm-rollout", "pre-rollout", "rollout", "confirm-promotion", "post-rollout", "event", "rollback", "confirm-traffic-increase"]))]
    pub type_: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(m|s)"))]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute_alert: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    #[serde(
        default,
        rename = "disableTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_tls: Option<bool>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct CanaryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_checks: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// The CRD as YAML, ready for `kubectl apply -f -`.
pub fn crd_yaml() -> Result<String, String> {
    use kube::CustomResourceExt;
    let crd = Canary::crd();
    let value = serde_json::to_value(&crd).map_err(|e| e.to_string())?;
    serde_saphyr::to_string(&value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_declares_both_analysis_fields_status_and_columns() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(Canary::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "canaries.flagger.app");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1beta1");
        assert!(version["subresources"]["status"].is_object());
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["x-kubernetes-preserve-unknown-fields"], true);
        assert!(spec["properties"]["analysis"].is_object());
        assert!(spec["properties"]["canaryAnalysis"].is_object());
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns[..2], ["Status", "Weight"]);
        assert!(
            crd_yaml()
                .unwrap()
                .contains("kind: CustomResourceDefinition")
        );
    }
}
