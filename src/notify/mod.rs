//! Notifications: Slack, Microsoft Teams and event webhooks.
//!
//! Pure parts: the event model (`event`), one renderer per channel (`slack`,
//! `teams`, `event_webhook`), `routing` (who gets what). I/O: `sender` (one
//! delivery with retries), `resolver` (policy-checked DNS) and `dispatcher`
//! (a bounded queue per destination).

pub mod destination;
pub mod dispatcher;
pub mod event;
pub mod event_webhook;
pub mod resolver;
pub mod routing;
pub mod sender;
pub mod settings;
pub mod signing;
pub mod slack;
pub mod teams;
