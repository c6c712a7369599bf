//! Admission for Flagger Canaries: validation and defaulting of webhooks.
//!
//! Pure decisions (`event_url`, `validate`, `defaulting`, `review`) sit apart from
//! the HTTPS server (`server`), so each can be tested without the other.

pub mod defaulting;
pub mod event_url;
pub mod problem;
pub mod review;
pub mod server;
pub mod validate;

use crate::destination_policy::DestinationPolicy;
use problem::Findings;
use serde::Serialize;
use serde_json::Value;

/// What admission would do to one Canary: the `check` command's answer.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    pub errors: Vec<problem::Problem>,
    pub warnings: Vec<problem::Problem>,
    pub patch: json_patch::Patch,
}

/// Defaults, applies the patch, then validates: what the API server's mutating and
/// validating calls amount to for a CREATE.
pub fn verdict(object: &Value, policy: &DestinationPolicy) -> Verdict {
    let patch = defaulting::default_patch(object);
    let mut patched = object.clone();
    let Findings { errors, warnings } = match json_patch::patch(&mut patched, &patch) {
        Ok(()) => validate::validate(&patched, policy),
        // Our own patch always applies to the object it came from; if not, judge the original.
        Err(_) => validate::validate(object, policy),
    };
    Verdict {
        allowed: errors.is_empty(),
        errors,
        warnings,
        patch,
    }
}
