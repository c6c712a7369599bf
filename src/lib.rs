//! canary-notifier: admission, alerting and notification for Flagger canaries.
//!
//! - [`admission`]: validates and defaults `type: event` webhooks (pure rules + HTTPS server).
//! - [`destination_policy`]: which hosts event webhooks may call.
//! - [`canary`]: the parts of a Flagger Canary we read.
//! - [`tls`], [`certs`]: serving certificates (hot reload) and their generation.
//! - [`serve`], [`check`], [`cli`]: the commands.

pub mod admission;
pub mod canary;
pub mod canary_crd;
pub mod certs;
pub mod check;
pub mod cli;
pub mod destination_policy;
pub mod flagger_duration;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod reconcile;
pub mod self_managed_certs;
pub mod serve;
pub mod tls;
