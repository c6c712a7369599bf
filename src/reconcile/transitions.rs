//! The chat alerts a canary's change calls for: a pure function from what was last
//! notified and the canary now to the occasions to send, in order, each with the
//! state to record once it is delivered.
//!
//! Messages and severities are Flagger's (scheduler.go). Unlike Flagger, a rollback
//! always alerts with its reason, and an occasion missed while the operator was
//! down is inferred from the status it left behind.

use super::canary_view::{CanaryView, format_time};
use super::notified_state::NotifiedState;
use crate::notify::event::{AlertFields, CanaryEvent, EventType, Severity};
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Initialized,
    NewRevision,
    Waiting,
    WaitingPromotion,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occasion {
    pub kind: Kind,
    pub severity: Severity,
    pub message: String,
    /// Attach Target, threshold, deadline and routing (Flagger's `metadata` flag).
    pub with_fields: bool,
    /// The phase event webhooks are told.
    pub phase: String,
    /// What to record once this occasion is delivered.
    pub state_after: NotifiedState,
}

impl Occasion {
    /// The notification for this occasion.
    pub fn event(&self, view: &CanaryView, timestamp_ms: u64) -> CanaryEvent {
        CanaryEvent {
            name: view.name.clone(),
            namespace: view.namespace.clone(),
            phase: self.phase.clone(),
            checksum: view.revision.clone(),
            message: self.message.clone(),
            event_type: if self.severity == Severity::Info {
                EventType::Normal
            } else {
                EventType::Warning
            },
            severity: self.severity,
            timestamp_ms,
            fields: if self.with_fields {
                AlertFields {
                    target: Some(view.target.clone()),
                    failed_checks_threshold: Some(view.threshold),
                    progress_deadline: Some(format!("{}s", view.progress_deadline_seconds)),
                    traffic_routing: view.traffic_routing.clone(),
                }
            } else {
                AlertFields::default()
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub occasions: Vec<Occasion>,
    /// The state to record when every occasion is delivered (also when there are none).
    pub final_state: NotifiedState,
}

const NOT_STARTED: [&str; 2] = ["", "Initializing"];
/// Phases that mean Flagger got past initialization.
const INITIALIZED: [&str; 7] = [
    "Initialized",
    "Waiting",
    "Progressing",
    "WaitingPromotion",
    "Promoting",
    "Finalising",
    "Succeeded",
];
/// Phases that only follow a rollout of the current revision.
const ROLLOUT: [&str; 6] = [
    "Progressing",
    "WaitingPromotion",
    "Promoting",
    "Finalising",
    "Succeeded",
    "Failed",
];

/// Whether a canary with no recorded state is new: created within `max_age`.
pub fn is_new(now: &CanaryView, clock: SystemTime, max_age: Duration) -> bool {
    now.created
        .is_some_and(|c| clock.duration_since(c).map_or(true, |age| age <= max_age))
}

/// Where to start for a canary with no recorded state: a new canary is notified
/// from its creation on; an older one predates us, so its present state is the
/// baseline and nothing old is announced.
pub fn starting_state(now: &CanaryView, clock: SystemTime, max_age: Duration) -> NotifiedState {
    if is_new(now, clock, max_age) {
        NotifiedState::default()
    } else {
        NotifiedState {
            phase: now.phase.clone(),
            revision: now.revision.clone(),
            announced: now.revision.clone(),
            progressing_since: None,
            events: Default::default(),
        }
    }
}

fn failure_message(now: &CanaryView, last: &NotifiedState) -> String {
    if now.failed_checks >= now.threshold {
        return format!("Failed checks threshold reached {}", now.failed_checks);
    }
    let deadline = Duration::from_secs(u64::try_from(now.progress_deadline_seconds).unwrap_or(600));
    let started = last
        .progressing_since
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
    let mentions_deadline = now
        .condition_message
        .as_deref()
        .is_some_and(|m| m.to_ascii_lowercase().contains("progress deadline"));
    let deadline_passed = match (started, now.last_transition_time) {
        (Some(start), Some(failed_at)) => {
            failed_at.duration_since(start).is_ok_and(|d| d >= deadline)
        }
        _ => false,
    };
    if mentions_deadline || deadline_passed {
        return format!(
            "Progress deadline exceeded: not ready within {}s",
            now.progress_deadline_seconds
        );
    }
    match now.condition_message.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => "Canary analysis failed".to_string(),
    }
}

/// The occasions between `last` and `now`.
pub fn plan(last: &NotifiedState, now: &CanaryView) -> Plan {
    let mut occasions = Vec::new();
    let mut state = last.clone();
    let same_phase = now.phase == last.phase;
    let same_revision = now.revision == last.revision;
    if same_phase && same_revision {
        return Plan {
            occasions,
            final_state: state,
        };
    }
    let mut push =
        |kind, severity, message: String, with_fields, phase: &str, state: &NotifiedState| {
            occasions.push(Occasion {
                kind,
                severity,
                message,
                with_fields,
                phase: phase.to_string(),
                state_after: state.clone(),
            });
        };

    // Initialization completed (perhaps while we were away).
    if NOT_STARTED.contains(&last.phase.as_str()) && INITIALIZED.contains(&now.phase.as_str()) {
        // The revision at initialization is only known if we are looking at it.
        let initial = if now.phase == "Initialized" {
            now.revision.clone()
        } else {
            String::new()
        };
        state.phase = "Initialized".into();
        state.revision = initial.clone();
        state.announced = initial;
        let kind = if now.target_kind.is_empty() {
            "workload".to_string()
        } else {
            now.target_kind.clone()
        };
        push(
            Kind::Initialized,
            Severity::Info,
            format!("New {kind} detected, initialization completed."),
            true,
            "Initialized",
            &state,
        );
    }

    // A new revision went into analysis.
    let in_rollout = ROLLOUT.contains(&now.phase.as_str());
    let already_terminal =
        matches!(last.phase.as_str(), "Succeeded" | "Failed") && same_phase && same_revision;
    let initialized = !NOT_STARTED.contains(&state.phase.as_str());
    if in_rollout
        && initialized
        && !already_terminal
        && now.revision != state.announced
        && !now.revision.is_empty()
    {
        state.phase = "Progressing".into();
        state.revision = now.revision.clone();
        state.announced = now.revision.clone();
        state.progressing_since = now.last_transition_time.map(format_time);
        push(
            Kind::NewRevision,
            Severity::Info,
            "New revision detected, progressing canary analysis.".into(),
            true,
            "Progressing",
            &state,
        );
    }

    let entered = |phase: &str| now.phase == phase && (last.phase != phase || !same_revision);
    state.phase = now.phase.clone();
    state.revision = now.revision.clone();
    if entered("Waiting") && !now.mute_waiting {
        push(
            Kind::Waiting,
            Severity::Warn,
            "Canary is waiting for approval.".into(),
            false,
            "Waiting",
            &state,
        );
    }
    if entered("WaitingPromotion") && !now.mute_waiting_promotion {
        push(
            Kind::WaitingPromotion,
            Severity::Warn,
            "Canary promotion is waiting for approval.".into(),
            false,
            "WaitingPromotion",
            &state,
        );
    }
    if entered("Succeeded") {
        let message = if now.skip_analysis {
            "Canary analysis was skipped, promotion finished."
        } else {
            "Canary analysis completed successfully, promotion finished."
        };
        push(
            Kind::Succeeded,
            Severity::Info,
            message.into(),
            false,
            "Succeeded",
            &state,
        );
    }
    if entered("Failed") {
        let message = failure_message(now, last);
        push(
            Kind::Failed,
            Severity::Error,
            message,
            false,
            "Failed",
            &state,
        );
    }
    if now.phase == "Progressing" && state.progressing_since.is_none() {
        state.progressing_since = now.last_transition_time.map(format_time);
    }
    Plan {
        occasions,
        final_state: state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(phase: &str, revision: &str) -> CanaryView {
        CanaryView {
            uid: "u".into(),
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: phase.into(),
            revision: revision.into(),
            threshold: 5,
            progress_deadline_seconds: 60,
            target: "Deployment/podinfo.test".into(),
            target_kind: "Deployment".into(),
            traffic_routing: Some("Weight step: 10 max: 50".into()),
            ..Default::default()
        }
    }

    fn state(phase: &str, revision: &str) -> NotifiedState {
        NotifiedState {
            phase: phase.into(),
            revision: revision.into(),
            announced: revision.into(),
            ..Default::default()
        }
    }

    fn kinds(p: &Plan) -> Vec<Kind> {
        p.occasions.iter().map(|o| o.kind.clone()).collect()
    }

    /// Applies `plan` for each canary state in turn, as a live operator would.
    fn walk(steps: &[CanaryView]) -> Vec<Kind> {
        let mut last = NotifiedState::default();
        let mut out = Vec::new();
        for now in steps {
            let p = plan(&last, now);
            out.extend(kinds(&p));
            last = p.final_state;
        }
        out
    }

    #[test]
    fn a_full_rollout_notifies_each_step_once() {
        let steps = [
            view("", ""),
            view("Initializing", ""),
            view("Initialized", "r1"),
            view("Initialized", "r1"), // resync
            view("Progressing", "r2"),
            view("Progressing", "r2"),
            view("WaitingPromotion", "r2"),
            view("WaitingPromotion", "r2"),
            view("Promoting", "r2"),
            view("Finalising", "r2"),
            view("Succeeded", "r2"),
            view("Succeeded", "r2"),
        ];
        assert_eq!(
            walk(&steps),
            [
                Kind::Initialized,
                Kind::NewRevision,
                Kind::WaitingPromotion,
                Kind::Succeeded
            ]
        );
    }

    #[test]
    fn every_phase_pair_is_handled_without_repeats() {
        let phases = [
            "",
            "Initializing",
            "Initialized",
            "Waiting",
            "Progressing",
            "WaitingPromotion",
            "Promoting",
            "Finalising",
            "Succeeded",
            "Failed",
            "Terminating",
        ];
        for from in phases {
            for to in phases {
                for (from_rev, to_rev) in [("r1", "r1"), ("r1", "r2")] {
                    let last = plan(&NotifiedState::default(), &view(from, from_rev)).final_state;
                    let p = plan(&last, &view(to, to_rev));
                    let k = kinds(&p);
                    // Never two of a kind, and a resync of the same state sends nothing.
                    let mut dedup = k.clone();
                    dedup.dedup();
                    assert_eq!(dedup, k, "{from}->{to}");
                    let again = plan(&p.final_state, &view(to, to_rev));
                    assert!(
                        again.occasions.is_empty(),
                        "{from}->{to} repeated {:?}",
                        kinds(&again)
                    );
                    // Entering a terminal phase always alerts.
                    if to == "Failed" && (from != "Failed" || from_rev != to_rev) {
                        assert!(
                            k.contains(&Kind::Failed),
                            "{from}({from_rev})->Failed({to_rev}): {k:?}"
                        );
                    }
                    if to == "Succeeded" && (from != "Succeeded" || from_rev != to_rev) {
                        assert!(k.contains(&Kind::Succeeded), "{from}->Succeeded: {k:?}");
                    }
                    if to == "Waiting" && from != "Waiting" {
                        assert!(k.contains(&Kind::Waiting), "{from}->Waiting: {k:?}");
                    }
                    if k.contains(&Kind::Initialized) {
                        assert!(["", "Initializing"].contains(&from));
                    }
                }
            }
        }
    }

    #[test]
    fn missed_transitions_are_inferred_once_after_a_restart() {
        // Notified up to Initialized; the operator was down during a whole rollout.
        let last = state("Initialized", "r1");
        let p = plan(&last, &view("Succeeded", "r2"));
        assert_eq!(kinds(&p), [Kind::NewRevision, Kind::Succeeded]);
        assert!(
            plan(&p.final_state, &view("Succeeded", "r2"))
                .occasions
                .is_empty()
        );
        // Down from before initialization until the end of the first rollout.
        let p = plan(&NotifiedState::default(), &view("Succeeded", "r2"));
        assert_eq!(
            kinds(&p),
            [Kind::Initialized, Kind::NewRevision, Kind::Succeeded]
        );
        // Each occasion carries the state to record after it: a crash after the first
        // leaves exactly the rest to send.
        let after_first = p.occasions[0].state_after.clone();
        assert_eq!(
            kinds(&plan(&after_first, &view("Succeeded", "r2"))),
            [Kind::NewRevision, Kind::Succeeded]
        );
        let after_second = p.occasions[1].state_after.clone();
        assert_eq!(
            kinds(&plan(&after_second, &view("Succeeded", "r2"))),
            [Kind::Succeeded]
        );
    }

    #[test]
    fn a_revision_change_mid_analysis_is_announced() {
        let last = state("Progressing", "r2");
        assert_eq!(
            kinds(&plan(&last, &view("Progressing", "r3"))),
            [Kind::NewRevision]
        );
        // Approval after Waiting: the revision enters analysis and is announced then.
        let waiting = plan(&state("Succeeded", "r1"), &view("Waiting", "r2"));
        assert_eq!(kinds(&waiting), [Kind::Waiting]);
        assert_eq!(
            kinds(&plan(&waiting.final_state, &view("Progressing", "r2"))),
            [Kind::NewRevision]
        );
    }

    #[test]
    fn failures_always_carry_their_reason() {
        let mut threshold = view("Failed", "r2");
        threshold.failed_checks = 5;
        let p = plan(&state("Progressing", "r2"), &threshold);
        assert_eq!(p.occasions[0].message, "Failed checks threshold reached 5");
        assert_eq!(p.occasions[0].severity, Severity::Error);

        let t0 = humantime::parse_rfc3339("2026-11-27T06:00:00Z").unwrap();
        let mut progressing = state("Progressing", "r2");
        progressing.progressing_since = Some("2026-11-27T06:00:00Z".into());
        let mut deadline = view("Failed", "r2");
        deadline.last_transition_time = Some(t0 + Duration::from_secs(61));
        deadline.condition_message =
            Some("Canary analysis failed, Deployment scaled to zero.".into());
        let p = plan(&progressing, &deadline);
        assert_eq!(
            p.occasions[0].message,
            "Progress deadline exceeded: not ready within 60s"
        );

        let mut other = view("Failed", "r2");
        other.last_transition_time = Some(t0 + Duration::from_secs(10));
        other.condition_message = Some("Canary analysis failed, Deployment scaled to zero.".into());
        let p = plan(&progressing, &other);
        assert_eq!(
            p.occasions[0].message,
            "Canary analysis failed, Deployment scaled to zero."
        );

        let p = plan(&state("Progressing", "r2"), &view("Failed", "r2"));
        assert_eq!(p.occasions[0].message, "Canary analysis failed");
    }

    #[test]
    fn messages_severities_and_fields_are_flaggers() {
        let p = plan(&NotifiedState::default(), &view("Initialized", "r1"));
        let o = &p.occasions[0];
        assert_eq!(
            o.message,
            "New Deployment detected, initialization completed."
        );
        assert_eq!((o.severity, o.with_fields), (Severity::Info, true));
        let e = o.event(&view("Initialized", "r1"), 7);
        assert_eq!(e.fields.target.as_deref(), Some("Deployment/podinfo.test"));
        assert_eq!(e.fields.failed_checks_threshold, Some(5));
        assert_eq!(e.fields.progress_deadline.as_deref(), Some("60s"));
        assert_eq!(e.event_type, EventType::Normal);
        let mut muted = view("Waiting", "r2");
        muted.mute_waiting = true;
        assert!(
            plan(&state("Succeeded", "r1"), &muted).occasions.is_empty(),
            "muteAlert silences Waiting"
        );
        let w = plan(&state("Progressing", "r2"), &view("WaitingPromotion", "r2"));
        assert_eq!(
            w.occasions[0].message,
            "Canary promotion is waiting for approval."
        );
        assert_eq!(w.occasions[0].severity, Severity::Warn);
        assert_eq!(
            w.occasions[0]
                .event(&view("WaitingPromotion", "r2"), 0)
                .event_type,
            EventType::Warning
        );
        let mut skipped = view("Succeeded", "r2");
        skipped.skip_analysis = true;
        let s = plan(&state("Progressing", "r2"), &skipped);
        assert_eq!(
            s.occasions[0].message,
            "Canary analysis was skipped, promotion finished."
        );
    }

    #[test]
    fn canaries_older_than_max_age_start_from_their_present_state() {
        let clock = humantime::parse_rfc3339("2026-11-27T12:00:00Z").unwrap();
        let mut old = view("Succeeded", "r1");
        old.created = Some(clock - Duration::from_secs(7200));
        let baseline = starting_state(&old, clock, Duration::from_secs(3600));
        assert!(
            plan(&baseline, &old).occasions.is_empty(),
            "no announcements for canaries that predate us"
        );
        let mut fresh = view("Initialized", "r1");
        fresh.created = Some(clock - Duration::from_secs(60));
        let start = starting_state(&fresh, clock, Duration::from_secs(3600));
        assert_eq!(kinds(&plan(&start, &fresh)), [Kind::Initialized]);
    }
}
