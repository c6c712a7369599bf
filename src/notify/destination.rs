//! Where a notification goes: the channel, the (secret) URL and how to call it.
//! Display and Debug show only scheme, host and port: webhook URLs carry tokens.

use std::time::Duration;
use url::Url;

/// Bounded set of channel names, used as the `channel` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Slack,
    MsTeams,
    EventWebhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Slack => "slack",
            Channel::MsTeams => "msteams",
            Channel::EventWebhook => "event_webhook",
        }
    }
}

/// `scheme://host[:port]`, the only part of a URL that may be shown anywhere.
pub fn redact(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Destination {
    pub channel: Channel,
    pub url: Url,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// Skip certificate verification (an event webhook's `disableTLS`).
    pub disable_tls: bool,
    /// Slack's `Authorization: Bearer` token.
    pub bearer: Option<String>,
    /// Sign the body (event webhooks, when a signing key is set).
    pub sign: bool,
}

impl Destination {
    /// `event_webhook http://receiver.ns:8080`
    pub fn display(&self) -> String {
        format!("{} {}", self.channel.as_str(), redact(&self.url))
    }

    /// Identity of the queue this destination's deliveries wait in: everything that
    /// changes how a request is made. Internal only (it holds the secret URL).
    pub(crate) fn queue_key(&self) -> (Channel, String, bool, bool) {
        (
            self.channel,
            self.url.to_string(),
            self.disable_tls,
            self.sign,
        )
    }
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("channel", &self.channel)
            .field("url", &redact(&self.url))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("disable_tls", &self.disable_tls)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("sign", &self.sign)
            .finish()
    }
}

/// One body for one destination.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub destination: Destination,
    pub body: bytes::Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_scheme_host_and_port_only() {
        let cases = [
            (
                "https://hooks.slack.com/services/T000/B000/XXXX",
                "https://hooks.slack.com",
            ),
            (
                "http://user:pw@receiver.ns:8080/p?token=1#f",
                "http://receiver.ns:8080",
            ),
            ("http://[::1]:9000/x", "http://[::1]:9000"),
            ("https://example.com:443/x", "https://example.com"),
        ];
        for (url, want) in cases {
            assert_eq!(redact(&Url::parse(url).unwrap()), want);
        }
        let d = Destination {
            channel: Channel::Slack,
            url: Url::parse("https://hooks.slack.com/services/T000/B000/XXXX").unwrap(),
            timeout: Duration::from_secs(5),
            retries: 3,
            disable_tls: false,
            bearer: Some("xoxb-secret".into()),
            sign: false,
        };
        let debug = format!("{d:?}");
        assert!(
            !debug.contains("XXXX") && !debug.contains("xoxb"),
            "{debug}"
        );
        assert_eq!(d.display(), "slack https://hooks.slack.com");
    }
}
