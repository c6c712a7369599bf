//! One delivery, start to finish: attempts with a per-attempt timeout, retries
//! with exponential backoff and jitter inside a separate budget, `Retry-After`,
//! and outbound safety (destination policy, no redirects, per-webhook TLS).

use super::destination::{Channel, Delivery, Destination};
use super::resolver::{Lookup, PolicyResolver, RefusedDestination};
use super::settings::{NotifySettings, SettingsError};
use super::signing::{SIGNATURE_HEADER, SigningKey, TIMESTAMP_HEADER};
use super::slack;
use crate::destination_policy::DestinationPolicy;
use crate::metrics::Metrics;
use backon::BackoffBuilder;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Client, StatusCode};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// go-retryablehttp's cap, which Flagger's webhooks use.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest reply body read (only Slack's is read at all).
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Why a delivery failed; a bounded set, used as the `reason` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    Timeout,
    Connect,
    Tls,
    HttpStatus,
    Redirect,
    SlackError,
    Refused,
    Request,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::HttpStatus => "http_status",
            FailureKind::Redirect => "redirect",
            FailureKind::SlackError => "slack_error",
            FailureKind::Refused => "refused",
            FailureKind::Request => "request",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered { status: u16 },
    Failed { reason: FailureKind, detail: String },
}

/// The result of one delivery. Holds no secret: `destination` is redacted.
#[derive(Clone, Debug)]
pub struct DeliveryReport {
    pub destination: String,
    pub channel: Channel,
    pub outcome: Outcome,
    pub attempts: u32,
    pub elapsed: Duration,
}

impl DeliveryReport {
    pub fn delivered(&self) -> bool {
        matches!(self.outcome, Outcome::Delivered { .. })
    }
}

impl fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attempts = if self.attempts == 1 {
            "1 attempt".to_string()
        } else {
            format!("{} attempts", self.attempts)
        };
        match &self.outcome {
            Outcome::Delivered { status } => write!(
                f,
                "{}: delivered (HTTP {status}, {attempts}, {} ms)",
                self.destination,
                self.elapsed.as_millis()
            ),
            Outcome::Failed {
                reason: FailureKind::Refused,
                detail,
            } => {
                write!(f, "{}: refused: {detail}", self.destination)
            }
            Outcome::Failed { detail, .. } => {
                write!(f, "{}: failed after {attempts}: {detail}", self.destination)
            }
        }
    }
}

enum Attempt {
    Delivered(u16),
    Retry {
        detail: String,
        kind: FailureKind,
        retry_after: Option<Duration>,
    },
    Fail {
        detail: String,
        kind: FailureKind,
    },
}

struct Clients {
    verified: Client,
    insecure: Client,
    slack: Client,
    teams: Client,
}

pub struct Sender {
    clients: Clients,
    policy: Arc<DestinationPolicy>,
    backoff: Duration,
    budget: Duration,
    signing: Option<SigningKey>,
    metrics: Metrics,
}

fn client(
    settings: &NotifySettings,
    resolver: &Arc<PolicyResolver>,
    proxy: Option<&url::Url>,
    insecure: bool,
) -> Result<Client, SettingsError> {
    let build_err = |flag: &'static str| {
        move |e: reqwest::Error| SettingsError {
            flag,
            problem: format!("cannot build the HTTP client: {}", e.without_url()),
        }
    };
    let mut builder = Client::builder()
        .user_agent(concat!("canary-notifier/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(resolver.clone())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .tls_danger_accept_invalid_certs(insecure);
    for der in &settings.extra_roots {
        builder = builder.tls_certs_merge([
            reqwest::Certificate::from_der(der).map_err(build_err("--ca-file"))?
        ]);
    }
    if let Some(proxy) = proxy {
        let proxy = reqwest::Proxy::all(proxy.as_str()).map_err(build_err("proxy URL"))?;
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(build_err("HTTP client"))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Retried: 408, 429 and 5xx except 501 (as go-retryablehttp, plus 408).
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

fn status_text(status: StatusCode) -> String {
    format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string()
}

/// The error and its causes, without the URL reqwest puts in its message.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn find_cause<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        // io::Error hides its payload from source(); look inside, however nested.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            current = Some(inner);
            continue;
        }
        current = e.source();
    }
    None
}

fn classify(error: reqwest::Error) -> Attempt {
    if let Some(refused) = find_cause::<RefusedDestination>(&error) {
        return Attempt::Fail {
            detail: refused.to_string(),
            kind: FailureKind::Refused,
        };
    }
    if let Some(rustls::Error::InvalidCertificate(_)) = find_cause::<rustls::Error>(&error) {
        return Attempt::Fail {
            detail: describe(error),
            kind: FailureKind::Tls,
        };
    }
    let kind = if error.is_timeout() {
        FailureKind::Timeout
    } else if error.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Request
    };
    Attempt::Retry {
        detail: describe(error),
        kind,
        retry_after: None,
    }
}

impl Sender {
    pub fn new(settings: &NotifySettings, metrics: Metrics) -> Result<Self, SettingsError> {
        Self::with_lookup(settings, metrics, None)
    }

    /// As [`Sender::new`], resolving names with `lookup` instead of the system resolver.
    pub fn with_lookup(
        settings: &NotifySettings,
        metrics: Metrics,
        lookup: Option<Lookup>,
    ) -> Result<Self, SettingsError> {
        let policy = Arc::new(settings.policy.clone());
        let resolver = Arc::new(PolicyResolver::new(policy.clone(), lookup));
        let slack_proxy = settings.slack.as_ref().and_then(|s| s.proxy.as_ref());
        let teams_proxy = settings.teams.as_ref().and_then(|t| t.proxy.as_ref());
        Ok(Sender {
            clients: Clients {
                verified: client(settings, &resolver, None, false)?,
                insecure: client(settings, &resolver, None, true)?,
                slack: client(settings, &resolver, slack_proxy, false)?,
                teams: client(settings, &resolver, teams_proxy, false)?,
            },
            policy,
            backoff: settings.retry_backoff,
            budget: settings.retry_budget,
            signing: settings.signing_key.clone(),
            metrics,
        })
    }

    fn client_for(&self, d: &Destination) -> &Client {
        match d.channel {
            Channel::Slack => &self.clients.slack,
            Channel::MsTeams => &self.clients.teams,
            Channel::EventWebhook if d.disable_tls => &self.clients.insecure,
            Channel::EventWebhook => &self.clients.verified,
        }
    }

    /// Sends `delivery`, retrying as configured, and reports the outcome. Never panics.
    pub async fn deliver(&self, delivery: &Delivery) -> DeliveryReport {
        let started = Instant::now();
        let d = &delivery.destination;
        let channel = d.channel.as_str();
        let report = |outcome, attempts| DeliveryReport {
            destination: d.display(),
            channel: d.channel,
            outcome,
            attempts,
            elapsed: started.elapsed(),
        };
        // IP literals never reach the resolver: check the host as written too.
        if let Some(Err(refusal)) = d.url.host().map(|h| self.policy.check_host(&h)) {
            self.metrics.notification_refused(channel);
            return report(
                Outcome::Failed {
                    reason: FailureKind::Refused,
                    detail: refusal.to_string(),
                },
                0,
            );
        }
        let deadline = started + self.budget;
        let mut delays = backon::ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(self.backoff)
            .with_max_delay(MAX_BACKOFF.max(self.backoff))
            .with_max_times(d.retries as usize)
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (detail, kind, retry_after) = match self.attempt(delivery).await {
                Attempt::Delivered(status) => {
                    self.metrics.notification_sent(channel);
                    return report(Outcome::Delivered { status }, attempts);
                }
                Attempt::Fail { detail, kind } => {
                    return self.failed(report, kind, detail, attempts);
                }
                Attempt::Retry {
                    detail,
                    kind,
                    retry_after,
                } => (detail, kind, retry_after),
            };
            let Some(backoff) = delays.next() else {
                let detail = if d.retries == 0 {
                    detail
                } else {
                    format!("{detail} (no retries left)")
                };
                return self.failed(report, kind, detail, attempts);
            };
            // Retry-After is honoured as a minimum wait.
            let delay = retry_after.map_or(backoff, |r| r.max(backoff));
            if Instant::now() + delay > deadline {
                let detail = format!(
                    "{detail} (retry budget of {} used up)",
                    humantime::format_duration(self.budget)
                );
                return self.failed(report, kind, detail, attempts);
            }
            self.metrics.notification_retried(channel);
            tracing::debug!(destination = %d.display(), attempt = attempts, ?delay, %detail, "retrying notification");
            tokio::time::sleep(delay).await;
        }
    }

    fn failed(
        &self,
        report: impl Fn(Outcome, u32) -> DeliveryReport,
        reason: FailureKind,
        detail: String,
        attempts: u32,
    ) -> DeliveryReport {
        let r = report(Outcome::Failed { reason, detail }, attempts);
        if reason == FailureKind::Refused {
            self.metrics.notification_refused(r.channel.as_str());
        } else {
            self.metrics
                .notification_failed(r.channel.as_str(), reason.as_str());
        }
        r
    }

    async fn attempt(&self, delivery: &Delivery) -> Attempt {
        let d = &delivery.destination;
        let mut request = self
            .client_for(d)
            .post(d.url.clone())
            .timeout(d.timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(delivery.body.clone());
        if let Some(token) = &d.bearer {
            request = request.bearer_auth(token);
        }
        if d.sign
            && let Some(key) = &self.signing
        {
            let timestamp = unix_seconds();
            request = request
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, key.signature(timestamp, &delivery.body));
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return classify(e),
        };
        let status = response.status();
        if status.is_success() {
            if d.channel == Channel::Slack {
                let mut body = Vec::new();
                while body.len() < MAX_REPLY_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                if let Some(code) = slack::reply_error(&body) {
                    return Attempt::Fail {
                        detail: format!(
                            "Slack answered {} with ok=false ({code})",
                            status.as_u16()
                        ),
                        kind: FailureKind::SlackError,
                    };
                }
            }
            return Attempt::Delivered(status.as_u16());
        }
        if status.is_redirection() {
            return Attempt::Fail {
                detail: format!(
                    "{}: redirects are not followed; use the final URL",
                    status_text(status)
                ),
                kind: FailureKind::Redirect,
            };
        }
        if is_retryable(status) {
            return Attempt::Retry {
                detail: status_text(status),
                kind: FailureKind::HttpStatus,
                retry_after: retry_after(response.headers()),
            };
        }
        Attempt::Fail {
            detail: status_text(status),
            kind: FailureKind::HttpStatus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retryable_statuses() {
        let retry = [408, 429, 500, 502, 503, 504, 599];
        let final_ = [200, 400, 401, 403, 404, 409, 410, 422, 501];
        for s in retry {
            assert!(is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in final_ {
            assert!(!is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a past date means now"
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
