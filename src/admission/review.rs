//! AdmissionReview in, AdmissionResponse out: the whole admission decision, pure.

use super::defaulting::default_patch;
use super::problem::{Findings, Problem};
use super::validate::validate;
use crate::canary;
use crate::destination_policy::DestinationPolicy;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::response::{Status, StatusCause, StatusDetails};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// How a review ended, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a Canary CREATE/UPDATE: allowed untouched.
    Ignored,
    Allowed,
    Patched,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ignored => "ignored",
            Outcome::Allowed => "allowed",
            Outcome::Patched => "patched",
            Outcome::Denied => "denied",
        }
    }
}

pub fn operation_str(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn is_canary_request(req: &AdmissionRequest<DynamicObject>) -> bool {
    req.kind.group == canary::GROUP
        && req.kind.kind == canary::KIND
        && req.sub_resource.as_deref().unwrap_or("").is_empty()
        && matches!(req.operation, Operation::Create | Operation::Update)
}

fn to_json(object: &Option<DynamicObject>) -> Option<Value> {
    object.as_ref().and_then(|o| serde_json::to_value(o).ok())
}

/// Answers one review. `dryRun` needs no special case: we have no side effects.
pub fn respond(
    endpoint: Endpoint,
    req: &AdmissionRequest<DynamicObject>,
    policy: &DestinationPolicy,
) -> (AdmissionResponse, Outcome) {
    let response = AdmissionResponse::from(req);
    if !is_canary_request(req) {
        return (response, Outcome::Ignored);
    }
    let Some(object) = to_json(&req.object) else {
        let denied = deny(
            response,
            &req.name,
            &[Problem::new(
                "request.object",
                "is missing; the API server always sends it for CREATE and UPDATE",
            )],
        );
        return (denied, Outcome::Denied);
    };
    match endpoint {
        Endpoint::Mutate => {
            let patch = default_patch(&object);
            if patch.is_empty() {
                return (response, Outcome::Allowed);
            }
            match response.clone().with_patch(patch) {
                Ok(patched) => (patched, Outcome::Patched),
                // Serialising a patch of strings cannot fail; if it did, allow unpatched.
                Err(_) => (response, Outcome::Allowed),
            }
        }
        Endpoint::Validate => {
            let mut findings = validate(&object, policy);
            if req.operation == Operation::Update
                && let Some(old) = to_json(&req.old_object)
            {
                findings = findings.ratchet(&validate(&old, policy));
            }
            let Findings { errors, warnings } = findings;
            let response = with_warnings(response, &warnings);
            if errors.is_empty() {
                (response, Outcome::Allowed)
            } else {
                (deny(response, &req.name, &errors), Outcome::Denied)
            }
        }
    }
}

/// The AdmissionReview JSON to send back. kube-core serialises `patch` as an array
/// of numbers; the documented wire form (Go's `[]byte`) is a base64 string.
pub fn to_wire(response: AdmissionResponse) -> Result<Value, serde_json::Error> {
    use base64::Engine as _;
    let patch = response
        .patch
        .as_ref()
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
    let mut review = serde_json::to_value(response.into_review())?;
    if let (Some(patch), Some(r)) = (patch, review.get_mut("response")) {
        r["patch"] = Value::String(patch);
    }
    Ok(review)
}

fn with_warnings(mut response: AdmissionResponse, warnings: &[Problem]) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings.iter().map(ToString::to_string).collect());
    }
    response
}

/// A 422 Invalid denial listing every problem, one per line, with causes for clients
/// that read `details`.
fn deny(response: AdmissionResponse, name: &str, errors: &[Problem]) -> AdmissionResponse {
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let mut response = response.deny(&message);
    let causes = errors
        .iter()
        .map(|p| StatusCause {
            reason: "FieldValueInvalid".into(),
            message: p.message.clone(),
            field: p.field.clone(),
        })
        .collect();
    response.result = Status::failure(&message, "Invalid")
        .with_code(422)
        .with_details(StatusDetails {
            name: name.to_string(),
            group: canary::GROUP.into(),
            kind: canary::KIND.into(),
            uid: String::new(),
            causes,
            retry_after_seconds: 0,
        });
    response
}
