//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): one
//! replica dispatches, every replica serves admission.
//!
//! kube-lease-manager keeps reporting leadership while it cannot reach the API
//! server, so a guard here re-reads the Lease and stops dispatching once the last
//! confirmed renewal is `duration - grace/2` old. The holder renews at
//! `duration - grace`, so a healthy holder never trips it, and it trips before any
//! other replica may take the Lease over (which needs the full `duration`).

use crate::metrics::Metrics;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use std::future::Future;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaderSettings {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal.
    pub duration: u64,
    /// Seconds before expiry at which the holder renews, and our safety margin.
    pub grace: u64,
}

/// Until when our hold on the lease is safe, from the Lease as the server has it.
fn valid_until(lease: &Lease, identity: &str, duration: u64, grace: u64) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = serde_json::to_value(spec.renew_time.as_ref()?).ok()?;
    let renewed = humantime::parse_rfc3339_weak(renewed.as_str()?).ok()?;
    Some(renewed + Duration::from_secs(duration) - Duration::from_secs(grace) / 2)
}

async fn confirmed_until(api: &Api<Lease>, settings: &LeaderSettings) -> Option<SystemTime> {
    let lease = tokio::time::timeout(Duration::from_secs(2), api.get(&settings.lease_name))
        .await
        .ok()?
        .ok()?;
    valid_until(
        &lease,
        &settings.identity,
        settings.duration,
        settings.grace,
    )
}

fn instant_of(t: SystemTime) -> tokio::time::Instant {
    tokio::time::Instant::now()
        + t.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
}

/// Resolves when our leadership can no longer be trusted. The deadline runs on its
/// own clock: a slow or hanging API call cannot delay it.
async fn guard(api: Api<Lease>, settings: LeaderSettings, mut until: SystemTime) {
    loop {
        let check = tokio::time::timeout(Duration::from_secs(1), api.get(&settings.lease_name));
        tokio::select! {
            _ = tokio::time::sleep_until(instant_of(until)) => break,
            result = check => match result {
                Ok(Ok(lease)) => match valid_until(&lease, &settings.identity, settings.duration, settings.grace) {
                    Some(t) => until = until.max(t),
                    None => {
                        tracing::warn!("the lease is held by another replica");
                        return;
                    }
                },
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the leader lease"),
                Err(_) => tracing::warn!("reading the leader lease timed out"),
            },
        }
        tokio::select! {
            _ = tokio::time::sleep_until(instant_of(until)) => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    tracing::warn!(
        "leader lease not renewed in time; stopping dispatch before another replica can take over"
    );
}

/// Runs `term()` while this replica leads, until `shutdown` turns true. `term` is
/// aborted the moment leadership ends, so nothing more is dispatched.
pub async fn lead<F, Fut>(
    client: Client,
    settings: LeaderSettings,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
    term: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let manager = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration)
        .with_grace(settings.grace)
        .build()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot set up leader election on lease {}/{}: {e}",
                settings.namespace,
                settings.lease_name
            )
        })?;
    let (mut leading, manager_task) = manager.watch().await;
    let leases: Api<Lease> = Api::namespaced(client, &settings.namespace);
    tracing::info!(identity = %settings.identity, lease = %settings.lease_name, "waiting for leadership");
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { anyhow::bail!("leader election stopped") },
        }
        // Only dispatch on a hold the API server confirms.
        let Some(until) = confirmed_until(&leases, &settings)
            .await
            .filter(|t| *t > SystemTime::now())
        else {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        tracing::info!(identity = %settings.identity, "became leader: dispatching notifications");
        metrics.set_leader(true);
        let mut work = tokio::spawn(term());
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => {}
            _ = leading.wait_for(|l| !*l) => tracing::warn!("lost leadership"),
            _ = guard(leases.clone(), settings.clone(), until) => {}
            _ = &mut work => tracing::error!("the controller stopped unexpectedly"),
        }
        work.abort();
        let _ = work.await;
        metrics.set_leader(false);
        metrics.set_canaries(&[]);
        tracing::info!("stopped dispatching");
        if *shutdown.borrow() {
            break;
        }
        // Let the lease go to others if it still looks like ours but is not renewed.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Dropping the receiver makes the manager release the lease.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), manager_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("leader lease released"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the leader lease"),
        _ => tracing::warn!("leader lease not released in time"),
    }
    Ok(())
}
