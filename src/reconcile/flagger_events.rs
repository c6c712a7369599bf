//! Kubernetes Events recorded on Canaries, as occurrences to forward to event
//! webhooks. An aggregated Event (same object, count incremented) is a new
//! occurrence each time. Which ones are new is decided against the watermark.

use super::notified_state::EventWatermark;
use crate::notify::event::EventType;
use serde_json::Value;
use std::time::SystemTime;

/// Our own Events (NotificationFailed, ...) are never forwarded back to receivers.
pub const REPORTER: &str = "canary-notifier";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occurrence {
    /// `<event uid>/<count>`
    pub key: String,
    pub time: SystemTime,
    /// Order among occurrences of the same second: the write order, which the
    /// (numeric, in practice) resourceVersion reflects; 0 when it is not a number.
    pub seq: u64,
    pub message: String,
    pub event_type: EventType,
    pub canary_namespace: String,
    pub canary_name: String,
}

fn micro_or_time(v: Option<&Value>) -> Option<SystemTime> {
    v.and_then(Value::as_str)
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
}

/// A core/v1 Event about a Canary, or None for anything else (including ours).
pub fn occurrence(event: &Value) -> Option<Occurrence> {
    let involved = event.get("involvedObject")?;
    let api_version = involved
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if involved.get("kind").and_then(Value::as_str) != Some(crate::canary::KIND)
        || !api_version.starts_with(crate::canary::GROUP)
    {
        return None;
    }
    let source = event
        .get("source")
        .and_then(|s| s.get("component"))
        .and_then(Value::as_str);
    let reporter = event.get("reportingComponent").and_then(Value::as_str);
    if source == Some(REPORTER) || reporter == Some(REPORTER) {
        return None;
    }
    let series = event.get("series");
    let time = micro_or_time(series.and_then(|s| s.get("lastObservedTime")))
        .or_else(|| micro_or_time(event.get("lastTimestamp")))
        .or_else(|| micro_or_time(event.get("eventTime")))
        .or_else(|| {
            micro_or_time(
                event
                    .get("metadata")
                    .and_then(|m| m.get("creationTimestamp")),
            )
        })?;
    let count = series
        .and_then(|s| s.get("count"))
        .and_then(Value::as_i64)
        .or_else(|| event.get("count").and_then(Value::as_i64))
        .unwrap_or(1);
    let uid = event
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)?;
    let seq = event
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    Some(Occurrence {
        key: format!("{uid}/{count}"),
        time,
        seq,
        message: event
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        event_type: if event.get("type").and_then(Value::as_str) == Some("Warning") {
            EventType::Warning
        } else {
            EventType::Normal
        },
        canary_namespace: involved
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        canary_name: involved
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

fn watermark_time(w: &EventWatermark) -> Option<SystemTime> {
    w.time
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

/// Occurrences not yet forwarded, oldest first.
pub fn pending(watermark: &EventWatermark, mut all: Vec<Occurrence>) -> Vec<Occurrence> {
    let mark = watermark_time(watermark);
    all.retain(|o| match mark {
        None => true,
        Some(t) => o.time > t || (o.time == t && !watermark.seen.contains(&o.key)),
    });
    all.sort_by(|a, b| {
        a.time
            .cmp(&b.time)
            .then(a.seq.cmp(&b.seq))
            .then_with(|| a.key.cmp(&b.key))
    });
    all.dedup_by(|a, b| a.key == b.key);
    all
}

/// The watermark after forwarding `o` (which must come from `pending`).
pub fn advance(watermark: &EventWatermark, o: &Occurrence) -> EventWatermark {
    let time = humantime::format_rfc3339_micros(o.time).to_string();
    if watermark_time(watermark) == Some(o.time) {
        let mut seen = watermark.seen.clone();
        seen.push(o.key.clone());
        EventWatermark {
            time: Some(time),
            seen,
        }
    } else {
        EventWatermark {
            time: Some(time),
            seen: vec![o.key.clone()],
        }
    }
}

/// A watermark that marks everything in `all` as already forwarded (a baseline for
/// canaries that predate the operator).
pub fn baseline(all: Vec<Occurrence>) -> EventWatermark {
    let mut w = EventWatermark::default();
    for o in pending(&EventWatermark::default(), all) {
        w = advance(&w, &o);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(uid: &str, count: i64, last: &str, message: &str) -> Value {
        json!({
            "metadata": {"uid": uid, "resourceVersion": "0", "name": format!("podinfo.{uid}"), "namespace": "test", "creationTimestamp": "2026-11-27T05:00:00Z"},
            "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "namespace": "test"},
            "reason": "Synced", "message": message, "type": "Normal", "count": count,
            "firstTimestamp": "2026-11-27T06:00:00Z", "lastTimestamp": last, "source": {"component": "flagger"}
        })
    }

    #[test]
    fn reads_flagger_events_and_ignores_others() {
        let o = occurrence(&ev(
            "a",
            3,
            "2026-11-27T06:00:05Z",
            "Advance podinfo.test canary weight 10",
        ))
        .unwrap();
        assert_eq!(o.key, "a/3");
        assert_eq!(
            (o.canary_namespace.as_str(), o.canary_name.as_str()),
            ("test", "podinfo")
        );
        let mut pod = ev("b", 1, "2026-11-27T06:00:05Z", "x");
        pod["involvedObject"]["kind"] = json!("Pod");
        assert_eq!(occurrence(&pod), None);
        let mut ours = ev("c", 1, "2026-11-27T06:00:05Z", "x");
        ours["source"]["component"] = json!(REPORTER);
        assert_eq!(occurrence(&ours), None);
        let mut warning = ev("d", 1, "2026-11-27T06:00:05Z", "x");
        warning["type"] = json!("Warning");
        assert_eq!(occurrence(&warning).unwrap().event_type, EventType::Warning);
    }

    #[test]
    fn watermark_forwards_each_occurrence_once() {
        let all = |list: &[(&str, i64, &str)]| -> Vec<Occurrence> {
            list.iter()
                .map(|(u, c, t)| occurrence(&ev(u, *c, t, "m")).unwrap())
                .collect()
        };
        let first = all(&[
            ("b", 1, "2026-11-27T06:00:01Z"),
            ("a", 1, "2026-11-27T06:00:01Z"),
            ("c", 1, "2026-11-27T06:00:00Z"),
        ]);
        let p = pending(&EventWatermark::default(), first.clone());
        let keys: Vec<&str> = p.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["c/1", "a/1", "b/1"], "oldest first");
        // Forward two of them, then see the list again plus an aggregated repeat.
        let mut w = EventWatermark::default();
        for o in &p[..2] {
            w = advance(&w, o);
        }
        let mut later = first.clone();
        later.extend(all(&[("c", 2, "2026-11-27T06:00:09Z")]));
        let keys: Vec<String> = pending(&w, later.clone())
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["b/1", "c/2"], "same-second events are not lost");
        let b = baseline(later.clone());
        assert!(pending(&b, later).is_empty());
    }

    #[test]
    fn same_second_events_keep_their_write_order() {
        let mut second = ev("zzz", 1, "2026-11-27T06:00:01Z", "first written");
        second["metadata"]["resourceVersion"] = json!("10");
        let mut third = ev("aaa", 1, "2026-11-27T06:00:01Z", "second written");
        third["metadata"]["resourceVersion"] = json!("11");
        let all = vec![occurrence(&third).unwrap(), occurrence(&second).unwrap()];
        let order: Vec<String> = pending(&EventWatermark::default(), all)
            .into_iter()
            .map(|o| o.message)
            .collect();
        assert_eq!(order, ["first written", "second written"]);
    }
}
