//! Validation rules for a Canary's webhooks (pure: JSON in, findings out).

use super::event_url;
use super::problem::{Findings, Problem};
use crate::canary::{self, Webhook, WebhookType};
use crate::destination_policy::DestinationPolicy;
use crate::flagger_duration;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub const MAX_RETRIES: i64 = 10;

/// Runs every rule over every webhook of `object` (a Canary as JSON).
pub fn validate(object: &Value, policy: &DestinationPolicy) -> Findings {
    let mut findings = Findings::default();
    let (hooks, mismatches) = canary::webhooks(object);
    findings
        .errors
        .extend(mismatches.into_iter().map(Problem::from));
    let mut first_use: HashMap<&str, String> = HashMap::new();
    for hook in &hooks {
        check_type(hook, &mut findings);
        check_name(hook, &mut first_use, &mut findings);
        if hook.is_event() {
            check_event_hook(hook, policy, &mut findings);
        }
    }
    findings
}

fn check_type(hook: &Webhook, findings: &mut Findings) {
    match hook.string("type") {
        Err(m) => findings.errors.push(m.into()),
        Ok(None) => {}
        Ok(Some(t)) if WebhookType::parse(t).is_some() => {}
        Ok(Some(t)) => findings.error(
            hook.location.path("type"),
            format!(
                "\"{}\" is not a Flagger webhook type; use one of {}",
                t.escape_debug(),
                WebhookType::list()
            ),
        ),
    }
}

fn check_name<'a>(
    hook: &Webhook<'a>,
    first_use: &mut HashMap<&'a str, String>,
    findings: &mut Findings,
) {
    let field = hook.location.path("name");
    match hook.string("name") {
        Err(m) => findings.errors.push(m.into()),
        Ok(None) => findings.error(field, "is missing; give the webhook a name"),
        Ok(Some(name)) if name.trim().is_empty() => {
            findings.error(field, "is empty; give the webhook a name")
        }
        Ok(Some(name)) => {
            if let Some(first) = first_use.get(name) {
                findings.error(
                    field,
                    format!(
                        "\"{}\" is already used by {first}; give each webhook a unique name",
                        name.escape_debug()
                    ),
                );
            } else {
                first_use.insert(name, hook.location.to_string());
            }
        }
    }
}

fn check_event_hook(hook: &Webhook, policy: &DestinationPolicy, findings: &mut Findings) {
    let url_field = hook.location.path("url");
    let mut scheme = None;
    match hook.string("url") {
        Err(m) => findings.errors.push(m.into()),
        Ok(None) => findings.error(
            &url_field,
            "is missing; set it to the http(s) URL of your event receiver",
        ),
        Ok(Some(raw)) => {
            let url = event_url::check(raw, policy);
            for e in url.errors {
                findings.error(&url_field, e);
            }
            for w in url.warnings {
                findings.warning(&url_field, w);
            }
            scheme = url.scheme;
        }
    }

    let timeout_field = hook.location.path("timeout");
    match hook.string("timeout") {
        Err(m) => findings.errors.push(m.into()),
        Ok(None) => {}
        Ok(Some(t)) => match flagger_duration::parse(t) {
            None => findings.error(
                timeout_field,
                format!(
                    "\"{}\" is not a duration Flagger accepts; use whole numbers with a unit, e.g. 15s, 1m30s or 500ms",
                    t.escape_debug()
                ),
            ),
            Some(d) if d.is_zero() => findings.error(timeout_field, "is zero; use a positive duration such as 10s"),
            Some(d) if d > MAX_TIMEOUT => findings.error(
                timeout_field,
                format!("\"{t}\" exceeds the 5m maximum; use 5m or less"),
            ),
            Some(_) => {}
        },
    }

    match hook.integer("retries") {
        Err(m) => findings.errors.push(m.into()),
        Ok(Some(r)) if !(0..=MAX_RETRIES).contains(&r) => findings.error(
            hook.location.path("retries"),
            format!("{r} is out of range; use a number from 0 to {MAX_RETRIES}"),
        ),
        Ok(_) => {}
    }

    match hook.boolean("disableTLS") {
        Err(m) => findings.errors.push(m.into()),
        Ok(Some(true)) if scheme.as_deref() == Some("https") => findings.warning(
            hook.location.path("disableTLS"),
            "turns off certificate verification for an https receiver; anyone on the path can read \
             or forge events; trust the receiver's CA instead",
        ),
        Ok(_) => {}
    }

    for key in ["metadata"] {
        if let Err(m) = hook.string_map(key) {
            findings.errors.push(m.into());
        }
    }
    if let Err(m) = hook.boolean("muteAlert") {
        findings.errors.push(m.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canary(hooks: Value) -> Value {
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
               "metadata": {"name": "podinfo", "namespace": "test"},
               "spec": {"analysis": {"interval": "1m", "webhooks": hooks}}})
    }

    fn event(extra: Value) -> Value {
        let mut hook =
            json!({"name": "ev", "type": "event", "url": "http://receiver.ns/", "timeout": "10s"});
        if let (Some(h), Some(e)) = (hook.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                h.insert(k.clone(), v.clone());
            }
        }
        hook
    }

    fn errors_for(hooks: Value) -> Vec<String> {
        validate(&canary(hooks), &DestinationPolicy::default())
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn valid_canaries_have_no_findings() {
        let cases = [
            json!([]),
            json!([event(json!({}))]),
            json!([event(
                json!({"timeout": "5m", "retries": 10, "metadata": {"a": "b"}, "muteAlert": false})
            )]),
            json!([event(
                json!({"timeout": "1m30s", "retries": 0, "disableTLS": true, "url": "http://r/"})
            )]),
            json!([{"name": "load-test", "url": "http://flagger-loadtester.test/", "timeout": "5s"},
                   {"name": "gate", "type": "confirm-rollout", "url": "http://gate/"},
                   event(json!({}))]),
            // Non-event hooks are not subject to the event URL rules.
            json!([{"name": "local", "type": "pre-rollout", "url": "http://localhost:8080/"}]),
        ];
        for hooks in cases {
            let f = validate(&canary(hooks.clone()), &DestinationPolicy::default());
            assert_eq!(f, Findings::default(), "{hooks}");
        }
    }

    #[test]
    fn error_table() {
        let w = "spec.analysis.webhooks[0]";
        let cases: Vec<(Value, String)> = vec![
            (json!([event(json!({"url": "ftp://x/"}))]),
             format!("{w}.url: scheme \"ftp\" is not supported; use http or https")),
            (json!([{"name": "ev", "type": "event"}]), format!("{w}.url: is missing")),
            (json!([event(json!({"url": ""}))]), format!("{w}.url: is empty")),
            (json!([event(json!({"url": 7}))]), format!("{w}.url: must be a string")),
            (json!([event(json!({"url": "http://127.0.0.1/"}))]), format!("{w}.url: host \"127.0.0.1\" is a loopback")),
            (json!([event(json!({"timeout": "5"}))]), format!("{w}.timeout: \"5\" is not a duration Flagger accepts")),
            (json!([event(json!({"timeout": "1.5s"}))]), format!("{w}.timeout: \"1.5s\" is not a duration")),
            (json!([event(json!({"timeout": "0s"}))]), format!("{w}.timeout: is zero")),
            (json!([event(json!({"timeout": "5m1s"}))]), format!("{w}.timeout: \"5m1s\" exceeds the 5m maximum")),
            (json!([event(json!({"timeout": "1h"}))]), format!("{w}.timeout: \"1h\" is not a duration")),
            (json!([event(json!({"timeout": 10}))]), format!("{w}.timeout: must be a string")),
            (json!([event(json!({"retries": -1}))]), format!("{w}.retries: -1 is out of range; use a number from 0 to 10")),
            (json!([event(json!({"retries": 11}))]), format!("{w}.retries: 11 is out of range")),
            (json!([event(json!({"retries": "3"}))]), format!("{w}.retries: must be an integer")),
            (json!([event(json!({"retries": 1.5}))]), format!("{w}.retries: must be an integer")),
            (json!([event(json!({"disableTLS": "true"}))]), format!("{w}.disableTLS: must be true or false")),
            (json!([event(json!({"metadata": {"a": 1}}))]), format!("{w}.metadata: must be a map of strings")),
            (json!([event(json!({"muteAlert": "no"}))]), format!("{w}.muteAlert: must be true or false")),
            (json!([event(json!({"name": ""}))]), format!("{w}.name: is empty")),
            (json!([{"type": "rollout", "url": "http://x/"}]), format!("{w}.name: is missing")),
            (json!([{"name": " ", "url": "http://x/"}]), format!("{w}.name: is empty")),
            (json!([{"name": 3, "url": "http://x/"}]), format!("{w}.name: must be a string")),
            (json!([{"name": "a", "type": "Event", "url": "http://x/"}]),
             format!("{w}.type: \"Event\" is not a Flagger webhook type; use one of \"\", \"confirm-rollout\"")),
            (json!([{"name": "a", "type": "pre_rollout"}]), format!("{w}.type: \"pre_rollout\" is not a Flagger webhook type")),
            (json!([{"name": "a", "type": 1}]), format!("{w}.type: must be a string")),
            (json!([{"name": "a"}, {"name": "a", "type": "event", "url": "http://r/"}]),
             "spec.analysis.webhooks[1].name: \"a\" is already used by spec.analysis.webhooks[0]; give each webhook a unique name".to_string()),
            (json!(["x"]), format!("{w}: must be an object")),
        ];
        for (hooks, want) in cases {
            let got = errors_for(hooks.clone());
            assert!(
                got.iter().any(|e| e.starts_with(&want)),
                "{hooks}\n got {got:?}\n want {want:?}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let got = errors_for(json!([
            event(json!({"url": "ftp://x/", "timeout": "9m", "retries": 99})),
            {"name": "ev", "type": "bogus"},
        ]));
        assert_eq!(got.len(), 5, "{got:?}");
    }

    #[test]
    fn duplicates_span_both_analysis_fields() {
        let object = json!({"spec": {
            "analysis": {"webhooks": [{"name": "same", "url": "http://a/"}]},
            "canaryAnalysis": {"webhooks": [{"name": "same", "url": "http://b/"}]}
        }});
        let f = validate(&object, &DestinationPolicy::default());
        assert_eq!(f.errors.len(), 1);
        assert_eq!(f.errors[0].field, "spec.canaryAnalysis.webhooks[0].name");
    }

    #[test]
    fn legacy_canary_analysis_is_validated() {
        let object = json!({"spec": {"canaryAnalysis": {"webhooks": [
            {"name": "ev", "type": "event", "url": "gopher://x/"}]}}});
        let f = validate(&object, &DestinationPolicy::default());
        assert_eq!(f.errors[0].field, "spec.canaryAnalysis.webhooks[0].url");
    }

    #[test]
    fn warning_table() {
        let cases = [
            (
                event(json!({"url": "https://u:p@r.example/"})),
                "url",
                "contains credentials",
            ),
            (
                event(json!({"url": "https://r.example/#x"})),
                "url",
                "has a fragment",
            ),
            (
                event(json!({"url": "https://r.example/", "disableTLS": true})),
                "disableTLS",
                "turns off certificate verification",
            ),
        ];
        for (hook, field, want) in cases {
            let f = validate(&canary(json!([hook])), &DestinationPolicy::default());
            assert!(f.errors.is_empty(), "{:?}", f.errors);
            assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
            assert_eq!(
                f.warnings[0].field,
                format!("spec.analysis.webhooks[0].{field}")
            );
            assert!(f.warnings[0].message.contains(want));
        }
        // disableTLS on plain http verifies nothing anyway: no warning.
        let f = validate(
            &canary(json!([event(json!({"disableTLS": true}))])),
            &DestinationPolicy::default(),
        );
        assert!(f.warnings.is_empty());
    }

    #[test]
    fn canary_without_spec_or_analysis_is_fine() {
        for object in [
            json!({}),
            json!({"spec": {}}),
            json!({"spec": {"analysis": {}}}),
            json!({"spec": {"analysis": {"webhooks": null}}}),
        ] {
            assert_eq!(
                validate(&object, &DestinationPolicy::default()),
                Findings::default()
            );
        }
    }
}
