//! The reconciler: turns canary lifecycle changes and Flagger's Events into
//! notifications, exactly once per change, durably.
//!
//! Pure: `canary_view` (what we read), `transitions` (which chat alerts),
//! `flagger_events` (which Events to forward), `notified_state` (what we record).

pub mod canary_view;
pub mod controller;
pub mod flagger_events;
pub mod leader;
pub mod notified_state;
pub mod transitions;
