//! DNS for outgoing notifications that applies the destination policy to every
//! resolved address, so a name pointing at loopback or cloud metadata (DNS
//! rebinding) is refused at send time, not just names written that way.

use crate::destination_policy::{DestinationPolicy, Refusal};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// How names become addresses; the system resolver unless a caller supplies one
/// (a library seam: the binary always uses the system's).
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

/// The resolver's refusal, found again in the error chain to tell it from a
/// network failure (refusals are never retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RefusedDestination(pub Refusal);

#[derive(Debug, thiserror::Error)]
#[error("host \"{0}\" resolved to no address")]
struct NoAddress(String);

pub struct PolicyResolver {
    policy: Arc<DestinationPolicy>,
    lookup: Lookup,
}

impl PolicyResolver {
    pub fn new(policy: Arc<DestinationPolicy>, lookup: Option<Lookup>) -> Self {
        PolicyResolver {
            policy,
            lookup: lookup.unwrap_or_else(system_lookup),
        }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        let lookup = (self.lookup)(host.clone());
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let resolved: Vec<SocketAddr> = lookup
                .await?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            let mut first_refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_resolved(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(refusal) => {
                        first_refusal.get_or_insert(refusal);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), first_refusal) {
                (true, Some(refusal)) => Err(Box::new(RefusedDestination(refusal)) as _),
                (true, None) => Err(Box::new(NoAddress(host)) as _),
                // Blocked addresses among allowed ones are dropped, never dialled.
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}
