//! Microsoft Teams: an Adaptive Card message for Workflows webhooks, or Flagger's
//! legacy MessageCard for the retired Office 365 connector URLs.

use super::event::{CanaryEvent, Severity};
use serde::Serialize;
use serde_json::{Value, json};
use url::Url;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TeamsFormat {
    /// MessageCard for `*.webhook.office.com` and `outlook.office.com` URLs, Adaptive Card otherwise.
    #[default]
    Auto,
    Adaptive,
    Messagecard,
}

/// Hosts of the retired O365 connectors, which only understand MessageCards.
fn is_connector_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.ends_with(".webhook.office.com")
        || host == "webhook.office.com"
        || host == "outlook.office.com"
        || host == "outlook.office365.com"
}

/// The card format actually sent to `url`.
pub fn resolve_format(format: TeamsFormat, url: &Url) -> TeamsFormat {
    match format {
        TeamsFormat::Auto if url.host_str().is_some_and(is_connector_host) => {
            TeamsFormat::Messagecard
        }
        TeamsFormat::Auto => TeamsFormat::Adaptive,
        explicit => explicit,
    }
}

#[derive(Serialize)]
struct MessageCard<'a> {
    #[serde(rename = "@type")]
    kind: &'a str,
    #[serde(rename = "@context")]
    context: &'a str,
    #[serde(rename = "themeColor")]
    theme_color: &'a str,
    summary: String,
    sections: [Section<'a>; 1],
}

#[derive(Serialize)]
struct Section<'a> {
    #[serde(rename = "activityTitle")]
    activity_title: &'a str,
    #[serde(rename = "activitySubtitle")]
    activity_subtitle: String,
    facts: Vec<Fact>,
}

#[derive(Serialize)]
struct Fact {
    name: &'static str,
    value: String,
}

/// Flagger's MessageCard, field for field in Flagger's order.
pub fn render_message_card(event: &CanaryEvent, cluster: Option<&str>) -> Vec<u8> {
    let card = MessageCard {
        kind: "MessageCard",
        context: "http://schema.org/extensions",
        theme_color: if event.severity == Severity::Error {
            "FF0000"
        } else {
            "0076D7"
        },
        summary: event.qualified_name(),
        sections: [Section {
            activity_title: &event.message,
            activity_subtitle: event.qualified_name(),
            facts: event
                .chat_fields(cluster)
                .into_iter()
                .map(|(name, value)| Fact { name, value })
                .collect(),
        }],
    };
    serde_json::to_vec(&card).unwrap_or_default()
}

/// An Adaptive Card (schema 1.4) wrapped in the message envelope Workflows expect.
pub fn render_adaptive_card(event: &CanaryEvent, cluster: Option<&str>) -> Vec<u8> {
    let colour = match event.severity {
        Severity::Info => "Good",
        Severity::Warn => "Warning",
        Severity::Error => "Attention",
    };
    let facts: Vec<Value> = event
        .chat_fields(cluster)
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": value}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": event.qualified_name(), "weight": "Bolder", "size": "Medium", "color": colour}),
        json!({"type": "TextBlock", "text": event.message, "wrap": true}),
    ];
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    let message = json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": body,
            },
        }],
    });
    serde_json::to_vec(&message).unwrap_or_default()
}

pub fn render(
    format: TeamsFormat,
    url: &Url,
    event: &CanaryEvent,
    cluster: Option<&str>,
) -> Vec<u8> {
    match resolve_format(format, url) {
        TeamsFormat::Messagecard => render_message_card(event, cluster),
        _ => render_adaptive_card(event, cluster),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_detects_connector_urls() {
        let cases = [
            (
                "https://contoso.webhook.office.com/webhookb2/abc",
                TeamsFormat::Messagecard,
            ),
            (
                "https://outlook.office.com/webhook/YOUR/TEAMS/WEBHOOK",
                TeamsFormat::Messagecard,
            ),
            (
                "https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke",
                TeamsFormat::Adaptive,
            ),
            (
                "https://default123.environment.api.powerplatform.com/powerautomate/x",
                TeamsFormat::Adaptive,
            ),
            (
                "https://evil-webhook.office.com.example.net/",
                TeamsFormat::Adaptive,
            ),
        ];
        for (url, want) in cases {
            assert_eq!(
                resolve_format(TeamsFormat::Auto, &Url::parse(url).unwrap()),
                want,
                "{url}"
            );
        }
        let workflow = Url::parse("https://x.logic.azure.com/").unwrap();
        assert_eq!(
            resolve_format(TeamsFormat::Messagecard, &workflow),
            TeamsFormat::Messagecard
        );
        let connector = Url::parse("https://a.webhook.office.com/").unwrap();
        assert_eq!(
            resolve_format(TeamsFormat::Adaptive, &connector),
            TeamsFormat::Adaptive
        );
    }
}
