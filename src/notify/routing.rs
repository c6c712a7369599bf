//! Which destinations an event goes to, and with what body (pure).
//!
//! Chat channels (Slack, Teams) get chat alerts; event webhooks get every event.
//! A canary's own `type: event` hooks replace the global event webhook, and all of
//! them are called (Flagger's rule).

use super::destination::{Channel, Delivery, Destination};
use super::event::CanaryEvent;
use super::event_webhook::{self, EventHook};
use super::settings::NotifySettings;
use super::{slack, teams};
use std::time::Duration;

/// Flagger's hard timeout for chat notifiers.
pub const CHAT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn chat_deliveries(event: &CanaryEvent, settings: &NotifySettings) -> Vec<Delivery> {
    let cluster = settings.cluster_name.as_deref();
    let mut out = Vec::new();
    if let Some(s) = &settings.slack {
        out.push(Delivery {
            destination: Destination {
                channel: Channel::Slack,
                url: s.url.clone(),
                timeout: CHAT_TIMEOUT,
                retries: settings.retries,
                disable_tls: false,
                bearer: s.token.clone(),
                sign: false,
            },
            body: slack::render(event, &s.channel, &s.username, cluster).into(),
        });
    }
    if let Some(t) = &settings.teams {
        out.push(Delivery {
            destination: Destination {
                channel: Channel::MsTeams,
                url: t.url.clone(),
                timeout: CHAT_TIMEOUT,
                retries: settings.retries,
                disable_tls: false,
                bearer: None,
                sign: false,
            },
            body: teams::render(t.format, &t.url, event, cluster).into(),
        });
    }
    out
}

/// Deliveries to `hooks`, or to the global event webhook when there are none.
pub fn event_deliveries(
    event: &CanaryEvent,
    hooks: &[EventHook],
    settings: &NotifySettings,
) -> Vec<Delivery> {
    let global;
    let hooks = if hooks.is_empty() {
        match &settings.event_webhook {
            Some(url) => {
                global = [EventHook::global(url.clone())];
                &global[..]
            }
            None => return Vec::new(),
        }
    } else {
        hooks
    };
    hooks
        .iter()
        .map(|hook| Delivery {
            destination: Destination {
                channel: Channel::EventWebhook,
                url: hook.url.clone(),
                timeout: hook.timeout,
                retries: hook.retries.unwrap_or(settings.retries),
                disable_tls: hook.disable_tls,
                bearer: None,
                sign: settings.signing_key.is_some(),
            },
            body: event_webhook::render(event, &hook.metadata).into(),
        })
        .collect()
}
