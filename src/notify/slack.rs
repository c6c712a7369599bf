//! Slack: Flagger's `SlackPayload`, byte-compatible (`icon_url: ""`, `:rocket:`,
//! `mrkdwn_in`, `short: false`), and the check of `chat.postMessage` replies.

use super::event::{CanaryEvent, Severity};
use serde::Serialize;

/// Where `--slack-token` posts when no `--slack-url` is given.
pub const POST_MESSAGE_URL: &str = "https://slack.com/api/chat.postMessage";

#[derive(Serialize)]
struct Payload<'a> {
    channel: &'a str,
    username: &'a str,
    icon_url: &'a str,
    icon_emoji: &'a str,
    attachments: [Attachment<'a>; 1],
}

#[derive(Serialize)]
struct Attachment<'a> {
    color: &'a str,
    author_name: String,
    text: &'a str,
    mrkdwn_in: [&'a str; 1],
    fields: Vec<Field>,
}

#[derive(Serialize)]
struct Field {
    title: &'static str,
    value: String,
    short: bool,
}

/// The JSON body Flagger's Slack notifier sends.
pub fn render(
    event: &CanaryEvent,
    channel: &str,
    username: &str,
    cluster: Option<&str>,
) -> Vec<u8> {
    let payload = Payload {
        channel,
        username,
        icon_url: "",
        icon_emoji: ":rocket:",
        attachments: [Attachment {
            color: if event.severity == Severity::Error {
                "danger"
            } else {
                "good"
            },
            author_name: event.qualified_name(),
            text: &event.message,
            mrkdwn_in: ["text"],
            fields: event
                .chat_fields(cluster)
                .into_iter()
                .map(|(title, value)| Field {
                    title,
                    value,
                    short: false,
                })
                .collect(),
        }],
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// `chat.postMessage` answers HTTP 200 with `{"ok": false, "error": "..."}` on
/// failure. Returns Slack's error code (a fixed token such as `channel_not_found`).
pub fn reply_error(body: &[u8]) -> Option<String> {
    let reply: serde_json::Value = serde_json::from_slice(body).ok()?;
    if reply.get("ok")? == &serde_json::Value::Bool(false) {
        let code = reply
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("unknown_error");
        // Codes are short snake_case tokens; anything else is not echoed.
        let safe = code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        Some(if safe {
            code.to_string()
        } else {
            "unknown_error".to_string()
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_errors() {
        assert_eq!(
            reply_error(br#"{"ok":false,"error":"channel_not_found"}"#),
            Some("channel_not_found".into())
        );
        assert_eq!(
            reply_error(br#"{"ok":false}"#),
            Some("unknown_error".into())
        );
        assert_eq!(
            reply_error(br#"{"ok":false,"error":"https://secret/x"}"#),
            Some("unknown_error".into())
        );
        assert_eq!(reply_error(br#"{"ok":true}"#), None);
        assert_eq!(reply_error(b"ok"), None);
        assert_eq!(reply_error(b""), None);
    }
}
