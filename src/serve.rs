//! `canary-notifier serve`: the HTTPS admission listener and the plain-HTTP ops port
//! (`/healthz`, `/readyz`, `/metrics`), with certificate reload and graceful drain.

use crate::admission::server::{AdmissionState, router};
use crate::destination_policy::DestinationPolicy;
use crate::metrics::Metrics;
use crate::tls::{self, CertificateFiles, CertificateReloader, ReloadingCertificate};
use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum_server::tls_rustls::RustlsConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub tls: CertificateFiles,
    pub tls_reload_interval: Duration,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_body_bytes: usize,
    pub policy: DestinationPolicy,
}

/// What `/readyz` reports on.
#[derive(Debug, Default)]
pub struct Health {
    certificate: Arc<ReloadingCertificate>,
    listening: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// `Err` names the first thing that is not ready.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::SeqCst) {
            Err("draining: shutting down")
        } else if !self.certificate.is_loaded() {
            Err("no serving certificate loaded yet")
        } else if !self.listening.load(Ordering::SeqCst) {
            Err("admission listener not bound yet")
        } else {
            Ok(())
        }
    }
}

/// Listeners bound, nothing served yet: bind errors surface before any work starts,
/// and tests can bind port 0 and read the addresses.
pub struct BoundServer {
    settings: ServeSettings,
    admission: std::net::TcpListener,
    ops: tokio::net::TcpListener,
    metrics: Metrics,
}

impl BoundServer {
    pub async fn bind(settings: ServeSettings) -> anyhow::Result<Self> {
        let admission = std::net::TcpListener::bind(settings.listen_addr)
            .with_context(|| format!("cannot listen on --listen-addr {}", settings.listen_addr))?;
        let ops = tokio::net::TcpListener::bind(settings.metrics_addr)
            .await
            .with_context(|| {
                format!("cannot listen on --metrics-addr {}", settings.metrics_addr)
            })?;
        Ok(BoundServer {
            settings,
            admission,
            ops,
            metrics: Metrics::new(),
        })
    }

    pub fn admission_addr(&self) -> std::io::Result<SocketAddr> {
        self.admission.local_addr()
    }

    pub fn ops_addr(&self) -> std::io::Result<SocketAddr> {
        self.ops.local_addr()
    }

    /// The registry `/metrics` serves, for other parts of the process to record into.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns 503, requests
    /// in flight finish (up to the drain timeout), idle keep-alive connections close.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tls::install_crypto_provider();
        let BoundServer {
            settings,
            admission,
            ops,
            metrics,
        } = self;
        let health = Arc::new(Health::default());
        let (stop_tx, stop_rx) = watch::channel(false);

        let reloader = CertificateReloader::new(settings.tls.clone(), health.certificate.clone());
        let reload_task = tokio::spawn(reloader.run(
            settings.tls_reload_interval,
            metrics.clone(),
            stop_rx.clone(),
        ));

        let tls_config = tls::server_config(health.certificate.clone())
            .context("building the TLS configuration")?;
        let state = AdmissionState {
            policy: Arc::new(settings.policy.clone()),
            metrics: metrics.clone(),
            max_body_bytes: settings.max_body_bytes,
        };
        let app = router(state, settings.request_timeout);
        let handle = axum_server::Handle::new();
        let mut server = axum_server::from_tcp_rustls(
            admission,
            RustlsConfig::from_config(Arc::new(tls_config)),
        )
        .context("cannot use the admission listener")?
        .handle(handle.clone());
        // Slow or idle clients must not hold connections open indefinitely.
        server
            .http_builder()
            .http1()
            .header_read_timeout(Some(settings.request_timeout))
            .keep_alive(true);
        let mut admission_task = tokio::spawn(server.serve(app.into_make_service()));

        let ops_addr = ops.local_addr().ok();
        let ops_app = ops_router(health.clone(), metrics.clone());
        let mut ops_stop = stop_rx.clone();
        let ops_task = tokio::spawn(async move {
            axum::serve(ops, ops_app)
                .with_graceful_shutdown(async move {
                    let _ = ops_stop.wait_for(|stop| *stop).await;
                })
                .await
        });

        if let Some(addr) = handle.listening().await {
            health.listening.store(true, Ordering::SeqCst);
            tracing::info!(%addr, "admission server listening (HTTPS)");
        }
        if let Some(addr) = ops_addr {
            tracing::info!(%addr, "ops server listening (HTTP: /healthz /readyz /metrics)");
        }

        let early_exit = tokio::select! {
            _ = shutdown => None,
            result = &mut admission_task => Some(result),
        };
        let result = match early_exit {
            Some(result) => flatten(result).context("admission server stopped unexpectedly"),
            None => {
                health.draining.store(true, Ordering::SeqCst);
                tracing::info!(
                    in_flight_connections = handle.connection_count(),
                    "shutting down: draining admission connections"
                );
                handle.graceful_shutdown(Some(settings.drain_timeout));
                flatten(admission_task.await).context("admission server failed while draining")
            }
        };
        let _ = stop_tx.send(true);
        let _ = reload_task.await;
        match ops_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "ops server failed"),
            Err(e) => tracing::error!(error = %e, "ops server task failed"),
        }
        tracing::info!("shutdown complete");
        result
    }
}

fn flatten(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.context("server task panicked")?.map_err(Into::into)
}

fn ops_router(health: Arc<Health>, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz).with_state(health))
        .route("/metrics", get(metrics_text).with_state(metrics))
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics_text(State(metrics): State<Metrics>) -> impl IntoResponse {
    match metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
