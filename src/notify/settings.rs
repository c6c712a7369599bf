//! Global notification settings, with Flagger's flag and environment names so
//! existing setups carry over. Every problem is a start-up error that names the
//! flag, never the secret value.

use super::signing::{MIN_KEY_BYTES, SigningKey};
use super::slack::POST_MESSAGE_URL;
use super::teams::TeamsFormat;
use crate::destination_policy::DestinationPolicy;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

pub const MAX_RETRIES: u32 = 10;

#[derive(Clone, Default, clap::Args)]
pub struct NotifyArgs {
    /// Slack incoming-webhook URL, or chat.postMessage with --slack-token.
    #[arg(long, value_name = "URL", env = "SLACK_URL", hide_env_values = true)]
    pub slack_url: Option<String>,
    /// Slack bot token, sent as `Authorization: Bearer` (posts to chat.postMessage when --slack-url is unset).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SLACK_TOKEN",
        hide_env_values = true
    )]
    pub slack_token: Option<String>,
    /// Slack channel (required with Slack, as in Flagger).
    #[arg(long, value_name = "CHANNEL", env = "CANARY_NOTIFIER_SLACK_CHANNEL")]
    pub slack_channel: Option<String>,
    /// Slack user name shown on messages.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "flagger",
        env = "CANARY_NOTIFIER_SLACK_USER"
    )]
    pub slack_user: String,
    /// HTTP(S) proxy for Slack only.
    #[arg(
        long,
        value_name = "URL",
        env = "SLACK_PROXY_URL",
        hide_env_values = true
    )]
    pub slack_proxy_url: Option<String>,
    /// Microsoft Teams webhook URL (Workflows, or a legacy connector).
    #[arg(long, value_name = "URL", env = "MSTEAMS_URL", hide_env_values = true)]
    pub msteams_url: Option<String>,
    /// HTTP(S) proxy for Teams only.
    #[arg(
        long,
        value_name = "URL",
        env = "MSTEAMS_PROXY_URL",
        hide_env_values = true
    )]
    pub msteams_proxy_url: Option<String>,
    /// Teams card format.
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "CANARY_NOTIFIER_MSTEAMS_FORMAT"
    )]
    pub msteams_format: TeamsFormat,
    /// Global event webhook, used for canaries without `type: event` webhooks.
    #[arg(
        long,
        value_name = "URL",
        env = "EVENT_WEBHOOK_URL",
        hide_env_values = true
    )]
    pub event_webhook: Option<String>,
    /// Adds a `Cluster` field to every chat message.
    #[arg(long, value_name = "NAME", env = "CANARY_NOTIFIER_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Retries after a failed attempt, for every channel (an event webhook's `retries` overrides it).
    #[arg(long, default_value_t = 3, env = "CANARY_NOTIFIER_RETRIES")]
    pub retries: u32,
    /// First retry delay; doubles per retry (with jitter) up to 30s.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_RETRY_BACKOFF")]
    pub retry_backoff: Duration,
    /// Longest time spent retrying one notification, on top of each attempt's timeout.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_RETRY_BUDGET")]
    pub retry_budget: Duration,
    /// Key to sign event-webhook bodies with (HMAC-SHA256); at least 16 bytes.
    #[arg(
        long,
        value_name = "KEY",
        env = "CANARY_NOTIFIER_SIGNING_KEY",
        hide_env_values = true
    )]
    pub signing_key: Option<String>,
    /// Extra PEM CA certificates to trust for outgoing HTTPS, besides the system's.
    #[arg(long, value_name = "FILE", env = "CANARY_NOTIFIER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Notifications that may wait per destination before producers are told to retry later.
    #[arg(long, default_value_t = 100, env = "CANARY_NOTIFIER_QUEUE_CAPACITY")]
    pub queue_capacity: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{flag}: {problem}")]
pub struct SettingsError {
    pub flag: &'static str,
    pub problem: String,
}

fn err(flag: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        flag,
        problem: problem.into(),
    }
}

#[derive(Clone)]
pub struct SlackSettings {
    pub url: Url,
    pub token: Option<String>,
    pub channel: String,
    pub username: String,
    pub proxy: Option<Url>,
}

#[derive(Clone)]
pub struct TeamsSettings {
    pub url: Url,
    pub format: TeamsFormat,
    pub proxy: Option<Url>,
}

/// Validated settings: constructing one is the start-up check.
#[derive(Clone)]
pub struct NotifySettings {
    pub slack: Option<SlackSettings>,
    pub teams: Option<TeamsSettings>,
    pub event_webhook: Option<Url>,
    pub cluster_name: Option<String>,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub retry_budget: Duration,
    pub signing_key: Option<SigningKey>,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub queue_capacity: usize,
    pub policy: DestinationPolicy,
}

/// Empty strings count as unset, as Flagger's `fromEnv` treats them.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Parses a secret URL; messages never repeat the value.
fn parse_url(
    flag: &'static str,
    raw: &str,
    policy: Option<&DestinationPolicy>,
) -> Result<Url, SettingsError> {
    let url = Url::parse(raw).map_err(|e| err(flag, format!("not a valid absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(
            flag,
            format!(
                "scheme \"{}\" is not supported; use http or https",
                url.scheme()
            ),
        ));
    }
    let host = url.host().ok_or_else(|| err(flag, "the URL has no host"))?;
    if let Some(policy) = policy {
        policy
            .check_host(&host)
            .map_err(|r| err(flag, r.to_string()))?;
    }
    Ok(url)
}

fn parse_proxy(flag: &'static str, raw: &Option<String>) -> Result<Option<Url>, SettingsError> {
    non_empty(raw).map(|p| parse_url(flag, p, None)).transpose()
}

impl NotifySettings {
    pub fn from_args(args: &NotifyArgs, policy: DestinationPolicy) -> Result<Self, SettingsError> {
        let slack_url = non_empty(&args.slack_url);
        let slack_token = non_empty(&args.slack_token).map(str::to_string);
        let slack = match (slack_url, &slack_token) {
            (None, None) => None,
            (url, _) => {
                let url = parse_url(
                    "--slack-url (SLACK_URL)",
                    url.unwrap_or(POST_MESSAGE_URL),
                    Some(&policy),
                )?;
                let channel = non_empty(&args.slack_channel).ok_or_else(|| {
                    err(
                        "--slack-channel",
                        "Slack is configured but no channel is set; set the channel to post to",
                    )
                })?;
                let username = args.slack_user.trim();
                if username.is_empty() {
                    return Err(err("--slack-user", "must not be empty"));
                }
                Some(SlackSettings {
                    url,
                    token: slack_token,
                    channel: channel.to_string(),
                    username: username.to_string(),
                    proxy: parse_proxy(
                        "--slack-proxy-url (SLACK_PROXY_URL)",
                        &args.slack_proxy_url,
                    )?,
                })
            }
        };
        let teams = non_empty(&args.msteams_url)
            .map(|raw| -> Result<TeamsSettings, SettingsError> {
                Ok(TeamsSettings {
                    url: parse_url("--msteams-url (MSTEAMS_URL)", raw, Some(&policy))?,
                    format: args.msteams_format,
                    proxy: parse_proxy(
                        "--msteams-proxy-url (MSTEAMS_PROXY_URL)",
                        &args.msteams_proxy_url,
                    )?,
                })
            })
            .transpose()?;
        let event_webhook = non_empty(&args.event_webhook)
            .map(|raw| parse_url("--event-webhook (EVENT_WEBHOOK_URL)", raw, Some(&policy)))
            .transpose()?;
        if args.retries > MAX_RETRIES {
            return Err(err(
                "--retries",
                format!("{} is above the maximum of {MAX_RETRIES}", args.retries),
            ));
        }
        if args.retry_backoff.is_zero() {
            return Err(err("--retry-backoff", "must be greater than zero"));
        }
        if args.queue_capacity == 0 {
            return Err(err("--queue-capacity", "must be at least 1"));
        }
        let signing_key = match args.signing_key.as_deref().filter(|k| !k.is_empty()) {
            None => None,
            Some(k) if k.len() < MIN_KEY_BYTES => {
                return Err(err(
                    "--signing-key (CANARY_NOTIFIER_SIGNING_KEY)",
                    format!(
                        "is {} bytes long; use at least {MIN_KEY_BYTES} random bytes",
                        k.len()
                    ),
                ));
            }
            Some(k) => Some(SigningKey::new(k.as_bytes())),
        };
        let extra_roots = match &args.ca_file {
            None => Vec::new(),
            Some(path) => read_ca_file(path)?,
        };
        Ok(NotifySettings {
            slack,
            teams,
            event_webhook,
            cluster_name: non_empty(&args.cluster_name).map(str::to_string),
            retries: args.retries,
            retry_backoff: args.retry_backoff,
            retry_budget: args.retry_budget,
            signing_key,
            extra_roots,
            queue_capacity: args.queue_capacity,
            policy,
        })
    }

    /// Whether any channel is configured at all.
    pub fn is_empty(&self) -> bool {
        self.slack.is_none() && self.teams.is_none() && self.event_webhook.is_none()
    }
}

fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, SettingsError> {
    const FLAG: &str = "--ca-file";
    let pem = std::fs::read(path)
        .map_err(|e| err(FLAG, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(FLAG, format!("{} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(
            FLAG,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> NotifyArgs {
        NotifyArgs {
            slack_user: "flagger".into(),
            retries: 3,
            retry_backoff: Duration::from_secs(1),
            retry_budget: Duration::from_secs(120),
            queue_capacity: 10,
            ..Default::default()
        }
    }

    fn error(edit: impl Fn(&mut NotifyArgs)) -> String {
        let mut a = args();
        edit(&mut a);
        match NotifySettings::from_args(&a, DestinationPolicy::default()) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    const SECRET: &str = "https://hooks.slack.com/services/T000/B000/SECRETPART";

    #[test]
    fn start_up_errors_name_the_flag_and_hide_the_value() {
        type Edit = Box<dyn Fn(&mut NotifyArgs)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|a| a.slack_url = Some(SECRET.into())),
                "--slack-channel: Slack is configured but no channel is set",
            ),
            (
                Box::new(|a| a.slack_url = Some("hooks.slack.com/SECRETPART".into())),
                "--slack-url (SLACK_URL): not a valid absolute URL",
            ),
            (
                Box::new(|a| {
                    a.slack_url = Some("ftp://x/SECRETPART".into());
                    a.slack_channel = Some("c".into())
                }),
                "--slack-url (SLACK_URL): scheme \"ftp\" is not supported",
            ),
            (
                Box::new(|a| {
                    a.slack_url = Some(SECRET.into());
                    a.slack_channel = Some("c".into());
                    a.slack_user = " ".into()
                }),
                "--slack-user: must not be empty",
            ),
            (
                Box::new(|a| {
                    a.slack_url = Some(SECRET.into());
                    a.slack_channel = Some("c".into());
                    a.slack_proxy_url = Some("::SECRETPART".into())
                }),
                "--slack-proxy-url (SLACK_PROXY_URL): not a valid absolute URL",
            ),
            (
                Box::new(|a| a.msteams_url = Some("not a url SECRETPART".into())),
                "--msteams-url (MSTEAMS_URL): not a valid absolute URL",
            ),
            (
                Box::new(|a| a.msteams_url = Some("http://127.0.0.1/SECRETPART".into())),
                "--msteams-url (MSTEAMS_URL): host \"127.0.0.1\" is a loopback address",
            ),
            (
                Box::new(|a| a.event_webhook = Some("relative/SECRETPART".into())),
                "--event-webhook (EVENT_WEBHOOK_URL): not a valid absolute URL",
            ),
            (
                Box::new(|a| a.retries = 11),
                "--retries: 11 is above the maximum of 10",
            ),
            (
                Box::new(|a| a.retry_backoff = Duration::ZERO),
                "--retry-backoff: must be greater than zero",
            ),
            (
                Box::new(|a| a.queue_capacity = 0),
                "--queue-capacity: must be at least 1",
            ),
            (
                Box::new(|a| a.signing_key = Some("SECRETPART".into())),
                "--signing-key (CANARY_NOTIFIER_SIGNING_KEY): is 10 bytes long",
            ),
            (
                Box::new(|a| a.ca_file = Some("/nonexistent/ca.pem".into())),
                "--ca-file: cannot read /nonexistent/ca.pem",
            ),
        ];
        for (edit, want) in cases {
            let got = error(edit);
            assert!(
                got.starts_with(want),
                "{got:?} does not start with {want:?}"
            );
            assert!(!got.contains("SECRETPART"), "{got} leaks the value");
        }
    }

    #[test]
    fn valid_settings() {
        let mut a = args();
        a.slack_token = Some("xoxb-1".into());
        a.slack_channel = Some("general".into());
        a.msteams_url = Some("https://contoso.webhook.office.com/x".into());
        a.event_webhook = Some("  ".into());
        a.cluster_name = Some("".into());
        a.signing_key = Some("0123456789abcdef".into());
        let s = NotifySettings::from_args(&a, DestinationPolicy::default()).unwrap();
        let slack = s.slack.unwrap();
        assert_eq!(
            slack.url.as_str(),
            POST_MESSAGE_URL,
            "a token alone posts to chat.postMessage"
        );
        assert_eq!(slack.username, "flagger");
        assert!(s.teams.is_some() && s.event_webhook.is_none() && s.cluster_name.is_none());
        assert!(s.signing_key.is_some());
        assert!(
            NotifySettings::from_args(&args(), DestinationPolicy::default())
                .unwrap()
                .is_empty()
        );
    }
}
