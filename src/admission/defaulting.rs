//! Defaults for `type: event` webhooks, as a JSON Patch against the raw object.
//!
//! Only three things ever change: a padded `url` is trimmed, a missing `timeout`
//! becomes Flagger's effective default `10s`, and a missing `name` gets a
//! deterministic unique one. Everything else is left byte-for-byte alone.

use crate::canary::{self, Webhook};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::Value;
use std::collections::HashSet;

/// Flagger uses 10s when an event webhook has no timeout; we write it down.
pub const DEFAULT_TIMEOUT: &str = "10s";

fn pointer(hook: &Webhook, key: &str) -> PointerBuf {
    let index = hook.location.index.to_string();
    PointerBuf::from_tokens([
        "spec",
        hook.location.field.key(),
        "webhooks",
        index.as_str(),
        key,
    ])
}

/// The patch that defaults `object`; empty when nothing needs to change.
pub fn default_patch(object: &Value) -> Patch {
    let (hooks, _) = canary::webhooks(object);
    let mut taken: HashSet<String> = hooks
        .iter()
        .filter_map(|h| h.string("name").ok().flatten())
        .map(str::to_string)
        .collect();
    let mut ops = Vec::new();
    for hook in hooks.iter().filter(|h| h.is_event()) {
        let url = hook.string("url").ok().flatten();
        if let Some(raw) = url {
            let trimmed = raw.trim();
            if trimmed != raw {
                ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: pointer(hook, "url"),
                    value: Value::String(trimmed.to_string()),
                }));
            }
        }
        if matches!(hook.string("timeout"), Ok(None)) {
            // `add` also replaces an explicit null.
            ops.push(PatchOperation::Add(AddOperation {
                path: pointer(hook, "timeout"),
                value: Value::String(DEFAULT_TIMEOUT.to_string()),
            }));
        }
        let needs_name = match hook.string("name") {
            Ok(None) => true,
            Ok(Some(name)) => name.trim().is_empty(),
            Err(_) => false, // a mistyped name is reported, not overwritten
        };
        if needs_name {
            let name = unique_name(url.map(str::trim), &mut taken);
            ops.push(PatchOperation::Add(AddOperation {
                path: pointer(hook, "name"),
                value: Value::String(name),
            }));
        }
    }
    Patch(ops)
}

/// Keeps `[a-z0-9.-]`, folding anything else (IPv6 colons) into single dashes.
fn sanitise(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    for c in host.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out.trim_matches('-').to_string()
}

/// `event-<host>` (or `event` without a usable host), suffixed `-2`, `-3`, ...
/// until unused. Depends only on the object, so the same canary gets the same names.
fn unique_name(url: Option<&str>, taken: &mut HashSet<String>) -> String {
    let host = url
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(sanitise));
    let base = match host {
        Some(h) if !h.is_empty() => format!("event-{h}"),
        _ => "event".to_string(),
    };
    let mut candidate = base.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::validate::validate;
    use crate::destination_policy::DestinationPolicy;
    use serde_json::json;

    fn canary(hooks: Value) -> Value {
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
               "metadata": {"name": "podinfo", "namespace": "test"},
               "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"},
                        "unknownField": {"kept": [1, 2, 3]},
                        "analysis": {"interval": "1m", "webhooks": hooks}}})
    }

    fn apply(object: &Value, patch: &Patch) -> Value {
        let mut doc = object.clone();
        json_patch::patch(&mut doc, patch).unwrap();
        doc
    }

    fn ops(patch: &Patch) -> Vec<(String, String, Value)> {
        patch
            .iter()
            .map(|op| match op {
                PatchOperation::Add(a) => ("add".to_string(), a.path.to_string(), a.value.clone()),
                PatchOperation::Replace(r) => {
                    ("replace".to_string(), r.path.to_string(), r.value.clone())
                }
                other => panic!("unexpected op {other:?}"),
            })
            .collect()
    }

    #[test]
    fn patch_table() {
        let w0 = "/spec/analysis/webhooks/0";
        type Op<'a> = (&'a str, String, Value);
        let cases: Vec<(Value, Vec<Op>)> = vec![
            // Already complete: no patch.
            (
                json!([{"name": "n", "type": "event", "url": "http://r/", "timeout": "5s"}]),
                vec![],
            ),
            // Non-event hooks are never touched.
            (json!([{"url": " http://r/ ", "type": "rollout"}]), vec![]),
            (
                json!([{"name": "n", "type": "event", "url": "http://r/"}]),
                vec![("add", format!("{w0}/timeout"), json!("10s"))],
            ),
            (
                json!([{"name": "n", "type": "event", "url": "http://r/", "timeout": null}]),
                vec![("add", format!("{w0}/timeout"), json!("10s"))],
            ),
            (
                json!([{"name": "n", "type": "event", "url": "  http://r/\n", "timeout": "1s"}]),
                vec![("replace", format!("{w0}/url"), json!("http://r/"))],
            ),
            (
                json!([{"type": "event", "url": "http://receiver.ns:8080/x", "timeout": "1s"}]),
                vec![("add", format!("{w0}/name"), json!("event-receiver.ns"))],
            ),
            (
                json!([{"type": "event", "name": "", "url": "not a url", "timeout": "1s"}]),
                vec![("add", format!("{w0}/name"), json!("event"))],
            ),
            (
                json!([{"type": "event", "url": "http://[::1]/", "timeout": "1s"}]),
                vec![("add", format!("{w0}/name"), json!("event-1"))],
            ),
            // A mistyped field is reported by validation, not overwritten.
            (
                json!([{"type": "event", "name": 5, "url": 5, "timeout": 5}]),
                vec![],
            ),
        ];
        for (hooks, want) in cases {
            let got = ops(&default_patch(&canary(hooks.clone())));
            let want: Vec<_> = want
                .into_iter()
                .map(|(o, p, v)| (o.to_string(), p, v))
                .collect();
            assert_eq!(got, want, "{hooks}");
        }
    }

    #[test]
    fn names_are_unique_and_deterministic() {
        let object = canary(json!([
            {"name": "event-r", "url": "http://x/"},
            {"type": "event", "url": "http://r/", "timeout": "1s"},
            {"type": "event", "url": "http://r/other", "timeout": "1s"},
            {"type": "event", "url": "http://s/", "timeout": "1s"},
        ]));
        let patch = default_patch(&object);
        assert_eq!(patch, default_patch(&object));
        let names: Vec<Value> = ops(&patch).into_iter().map(|(_, _, v)| v).collect();
        assert_eq!(
            names,
            [json!("event-r-2"), json!("event-r-3"), json!("event-s")]
        );
    }

    #[test]
    fn legacy_list_gets_its_own_paths() {
        let object = json!({"spec": {"canaryAnalysis": {"webhooks": [
            {"name": "e", "type": "event", "url": "http://r/"}]}}});
        let got = ops(&default_patch(&object));
        assert_eq!(got[0].1, "/spec/canaryAnalysis/webhooks/0/timeout");
    }

    /// Defaulting then validating allows every canary without a real error, leaves
    /// unmodelled fields alone, and a second defaulting pass finds nothing to do.
    #[test]
    fn default_then_validate_round_trip() {
        let policy = DestinationPolicy::default();
        let fine = [
            json!([{"type": "event", "url": "http://r/"}]),
            json!([{"type": "event", "url": " https://r.example/hook ", "metadata": {"a": "b"}}]),
            json!([{"type": "event", "url": "http://a/"}, {"type": "event", "url": "http://a/"},
                   {"name": "event-a", "type": "rollout", "url": "http://a/"}]),
            json!([{"type": "event", "name": null, "timeout": null, "url": "http://r/"}]),
        ];
        for hooks in fine {
            let object = canary(hooks.clone());
            let patched = apply(&object, &default_patch(&object));
            assert_eq!(validate(&patched, &policy).errors, vec![], "{hooks}");
            assert!(
                default_patch(&patched).is_empty(),
                "second pass patched {hooks}"
            );
            assert_eq!(patched["spec"]["unknownField"], json!({"kept": [1, 2, 3]}));
            assert_eq!(patched["spec"]["targetRef"], object["spec"]["targetRef"]);
        }
        let broken = [
            json!([{"type": "event", "url": "ftp://r/"}]),
            json!([{"type": "event", "url": "   "}]),
            json!([{"type": "event", "url": "http://r/", "retries": 50}]),
        ];
        for hooks in broken {
            let object = canary(hooks.clone());
            let patched = apply(&object, &default_patch(&object));
            assert!(!validate(&patched, &policy).errors.is_empty(), "{hooks}");
            assert!(
                default_patch(&patched).is_empty(),
                "second pass patched {hooks}"
            );
        }
    }
}
