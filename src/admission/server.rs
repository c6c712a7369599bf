//! The HTTPS admission endpoints: `POST /mutate` and `POST /validate`.
//!
//! Handlers are thin: parse the review, call [`review::respond`], record metrics.
//! `router()` is public so tests can drive it in-process as well as over a socket.

use super::review::{self, Endpoint, Outcome};
use crate::destination_policy::DestinationPolicy;
use crate::metrics::{Metrics, ReviewLabels};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::timeout::TimeoutLayer;

pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Clone)]
pub struct AdmissionState {
    pub policy: Arc<DestinationPolicy>,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
}

pub fn router(state: AdmissionState, request_timeout: Duration) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "not found: use POST /mutate or POST /validate",
    )
}

async fn mutate(
    State(state): State<AdmissionState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(Endpoint::Mutate, &state, body)
}

async fn validate(
    State(state): State<AdmissionState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(Endpoint::Validate, &state, body)
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    (status, message).into_response()
}

/// Why a body is not a review we can answer: each becomes an HTTP error, since
/// without a uid there is no AdmissionResponse to send.
fn parse_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let raw: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let api_version = raw.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = raw.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if kind != "AdmissionReview" {
        return Err(format!(
            "expected kind AdmissionReview, got {:?}; send an admission.k8s.io/v1 AdmissionReview",
            kind
        ));
    }
    if api_version != REVIEW_API_VERSION {
        return Err(format!(
            "AdmissionReview version {api_version:?} is not supported; configure the webhook with admissionReviewVersions: [v1]"
        ));
    }
    if raw.get("request").is_none_or(|r| r.is_null()) {
        return Err("AdmissionReview has no request".into());
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(raw)
        .map_err(|e| format!("AdmissionReview request is malformed: {e}"))?;
    review
        .try_into()
        .map_err(|_| "AdmissionReview has no request".to_string())
}

fn handle(
    endpoint: Endpoint,
    state: &AdmissionState,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let labels = |operation, result| ReviewLabels {
        endpoint: endpoint.as_str(),
        operation,
        result,
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            state
                .metrics
                .review(labels("unknown", "bad_request"), started.elapsed());
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "request body exceeds the {} byte limit (--max-body-bytes)",
                    state.max_body_bytes
                )
            } else {
                format!("cannot read request body: {rejection}")
            };
            return plain(status, message);
        }
    };
    let request = match parse_review(&body) {
        Ok(request) => request,
        Err(message) => {
            state
                .metrics
                .review(labels("unknown", "bad_request"), started.elapsed());
            tracing::warn!(endpoint = endpoint.as_str(), %message, "bad admission request");
            return plain(StatusCode::BAD_REQUEST, message);
        }
    };
    let (response, outcome) = review::respond(endpoint, &request, &state.policy);
    let operation = review::operation_str(&request.operation);
    state
        .metrics
        .review(labels(operation, outcome.as_str()), started.elapsed());
    if outcome != Outcome::Ignored {
        // Identity and counts only: objects may hold secrets and are large.
        tracing::info!(
            endpoint = endpoint.as_str(),
            uid = %request.uid,
            namespace = request.namespace.as_deref().unwrap_or(""),
            name = %request.name,
            operation,
            dry_run = request.dry_run,
            result = outcome.as_str(),
            warnings = response.warnings.as_ref().map_or(0, Vec::len),
            "admission review"
        );
    }
    match review::to_wire(response) {
        Ok(json) => Json(json).into_response(),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the AdmissionReview response: {e}"),
        ),
    }
}
