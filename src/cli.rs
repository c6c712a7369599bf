//! Command line: `serve`, `check` and `certs`. Every `serve` flag also reads an
//! environment variable (`CANARY_NOTIFIER_*`), so a Deployment can set them either way.

use crate::certs::CertRequest;
use crate::check;
use crate::destination_policy::DestinationPolicy;
use crate::logging::{self, LogFormat};
use crate::metrics::Metrics;
use crate::notify::dispatcher::Dispatcher;
use crate::notify::event::{AlertFields, CanaryEvent, EventType, Severity, now_ms};
use crate::notify::event_webhook::{DEFAULT_TIMEOUT, EventHook};
use crate::notify::routing;
use crate::notify::sender::Sender;
use crate::notify::settings::{NotifyArgs, NotifySettings};
use crate::reconcile::controller::{self, ControllerSettings, EventsFrom};
use crate::reconcile::leader::{self, LeaderSettings};
use crate::serve::{self, BoundServer, ServeSettings};
use crate::tls::CertificateFiles;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "canary-notifier",
    version,
    about = "Admission and alerting for Flagger canaries"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CANARY_NOTIFIER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax); RUST_LOG wins when set.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "CANARY_NOTIFIER_LOG_LEVEL"
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the admission webhooks over HTTPS and /healthz, /readyz, /metrics over HTTP.
    Serve(Box<ServeArgs>),
    /// Run admission defaulting and validation on Canaries in files (YAML or JSON).
    Check(CheckArgs),
    /// Write a CA and a serving certificate for the admission Service.
    Certs(CertsArgs),
    /// Send one event through every configured channel and report each delivery.
    Notify(Box<NotifyCommandArgs>),
    /// Print the Canary CRD (flagger.app/v1beta1) as YAML, for clusters without Flagger.
    Crd,
}

/// Where event webhooks may point: shared by admission and (later) the sender.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// Also refuse event URLs in this IP range (repeatable, or comma-separated in the env var).
    #[arg(
        long = "deny-cidr",
        value_name = "CIDR",
        env = "CANARY_NOTIFIER_DENY_CIDRS",
        value_delimiter = ','
    )]
    pub deny_cidrs: Vec<String>,
    /// Exempt this host name or IP from the block list, e.g. 127.0.0.1 for a local receiver.
    #[arg(
        long = "allow-host",
        value_name = "HOST",
        env = "CANARY_NOTIFIER_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    pub allow_hosts: Vec<String>,
    /// Exempt this IP range from the block list.
    #[arg(
        long = "allow-cidr",
        value_name = "CIDR",
        env = "CANARY_NOTIFIER_ALLOW_CIDRS",
        value_delimiter = ','
    )]
    pub allow_cidrs: Vec<String>,
    /// Only allow event URLs whose host matches one of these globs (e.g. '*.svc.cluster.local').
    #[arg(
        long = "only-hosts",
        value_name = "GLOB",
        env = "CANARY_NOTIFIER_ONLY_HOSTS",
        value_delimiter = ','
    )]
    pub only_hosts: Vec<String>,
}

impl PolicyArgs {
    pub fn policy(
        &self,
    ) -> Result<DestinationPolicy, crate::destination_policy::PolicyConfigError> {
        DestinationPolicy::new(
            &self.deny_cidrs,
            &self.allow_hosts,
            &self.allow_cidrs,
            &self.only_hosts,
        )
    }
}

#[derive(Args)]
pub struct ServeArgs {
    /// HTTPS address for /mutate and /validate.
    #[arg(
        long,
        default_value = "0.0.0.0:8443",
        env = "CANARY_NOTIFIER_LISTEN_ADDR"
    )]
    pub listen_addr: SocketAddr,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(
        long,
        default_value = "0.0.0.0:8080",
        env = "CANARY_NOTIFIER_METRICS_ADDR"
    )]
    pub metrics_addr: SocketAddr,
    /// PEM certificate chain (leaf first); reloaded when it changes.
    #[arg(
        long,
        default_value = "/etc/canary-notifier/tls/tls.crt",
        env = "CANARY_NOTIFIER_TLS_CERT_FILE"
    )]
    pub tls_cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); reloaded when it changes.
    #[arg(
        long,
        default_value = "/etc/canary-notifier/tls/tls.key",
        env = "CANARY_NOTIFIER_TLS_KEY_FILE"
    )]
    pub tls_key_file: PathBuf,
    /// How often to look for a new certificate on disk.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_TLS_RELOAD_INTERVAL")]
    pub tls_reload_interval: Duration,
    /// Longest time to read and answer one review; keep it below the webhook's timeoutSeconds.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_REQUEST_TIMEOUT")]
    pub request_timeout: Duration,
    /// On SIGTERM, how long in-flight reviews may take to finish.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_DRAIN_TIMEOUT")]
    pub drain_timeout: Duration,
    /// Largest AdmissionReview body accepted (413 above it).
    #[arg(long, default_value_t = crate::admission::server::DEFAULT_MAX_BODY_BYTES, env = "CANARY_NOTIFIER_MAX_BODY_BYTES")]
    pub max_body_bytes: usize,
    /// Serve admission only, without connecting to Kubernetes.
    #[arg(long, env = "CANARY_NOTIFIER_ADMISSION_ONLY")]
    pub admission_only: bool,
    /// Watch canaries in this namespace only (all namespaces when unset).
    #[arg(long, value_name = "NAMESPACE", env = "CANARY_NOTIFIER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where event webhooks get events from.
    #[arg(
        long,
        value_enum,
        default_value = "kubernetes",
        env = "CANARY_NOTIFIER_EVENTS_FROM"
    )]
    pub events_from: EventsFrom,
    /// How long an undeliverable notification is retried before a NotificationFailed Event gives it up.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_MAX_NOTIFICATION_AGE")]
    pub max_notification_age: Duration,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        default_value = "canary-notifier-leader",
        env = "CANARY_NOTIFIER_LEASE_NAME"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace).
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long the Lease is valid after a renewal (whole seconds).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_LEASE_DURATION")]
    pub lease_duration: Duration,
    /// How long before expiry the holder renews; also the margin by which a holder
    /// that cannot renew stops dispatching early (whole seconds).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_LEASE_GRACE")]
    pub lease_grace: Duration,
    /// Where the serving certificate comes from: files (cert-manager, static certs,
    /// local use), or self-managed (the leader keeps a CA and certificate in a Secret,
    /// mounted at --tls-cert-file/--tls-key-file, and injects the CA into the webhook
    /// configurations).
    #[arg(
        long,
        value_enum,
        default_value = "files",
        env = "CANARY_NOTIFIER_CERT_MODE"
    )]
    pub cert_mode: CertMode,
    /// Self-managed mode: the Secret holding ca.crt, tls.crt and tls.key.
    #[arg(
        long,
        default_value = "canary-notifier-tls",
        env = "CANARY_NOTIFIER_CERT_SECRET"
    )]
    pub cert_secret: String,
    /// Self-managed mode: the admission Service's name (the certificate's DNS names).
    #[arg(
        long,
        default_value = "canary-notifier",
        env = "CANARY_NOTIFIER_SERVICE_NAME"
    )]
    pub service_name: String,
    /// Self-managed mode: the Mutating- and ValidatingWebhookConfiguration to inject the CA into.
    #[arg(
        long,
        default_value = "canary-notifier",
        env = "CANARY_NOTIFIER_WEBHOOK_CONFIG_NAME"
    )]
    pub webhook_config_name: String,
    /// Self-managed mode: CA validity; a new CA is made in its last third.
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_CA_VALIDITY")]
    pub ca_validity: Duration,
    /// Self-managed mode: serving certificate validity; renewed in its last third.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_CERT_VALIDITY")]
    pub cert_validity: Duration,
    /// Self-managed mode: how often the leader checks the certificates.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, env = "CANARY_NOTIFIER_CERT_CHECK_INTERVAL")]
    pub cert_check_interval: Duration,
    #[command(flatten)]
    pub notify: NotifyArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CertMode {
    Files,
    SelfManaged,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Files to check; `-` or nothing reads standard input.
    pub files: Vec<String>,
    /// Report format.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Name of the admission Service.
    #[arg(long, default_value = "canary-notifier")]
    pub service: String,
    /// Namespace of the admission Service.
    #[arg(long, default_value = "canary-notifier")]
    pub namespace: String,
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Extra DNS name for the serving certificate (repeatable).
    #[arg(long)]
    pub dns: Vec<String>,
    /// Extra IP address for the serving certificate (repeatable), e.g. 127.0.0.1.
    #[arg(long)]
    pub ip: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(Args)]
pub struct NotifyCommandArgs {
    /// Canary name.
    #[arg(long)]
    pub name: String,
    /// Canary namespace.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Canary phase reported to event webhooks.
    #[arg(long, default_value = "Progressing")]
    pub phase: String,
    /// The message: chat text and the event's `eventMessage`.
    #[arg(long)]
    pub message: String,
    /// Event type; defaults to Normal for info, Warning otherwise.
    #[arg(long = "type", value_enum)]
    pub event_type: Option<EventType>,
    /// Chat severity: error is shown in red.
    #[arg(long, value_enum, default_value = "info")]
    pub severity: Severity,
    /// Checksum reported to event webhooks.
    #[arg(long, default_value = "")]
    pub checksum: String,
    /// Event webhook to call instead of --event-webhook (repeatable), like a canary's `type: event` hooks.
    #[arg(long = "event-url", value_name = "URL")]
    pub event_urls: Vec<String>,
    #[command(flatten)]
    pub notify: NotifyArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// Exit codes: 0 success; 1 a check denied something or serving failed; 2 bad
/// input or settings.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Serve(args) => run_serve(*args),
        Command::Check(args) => run_check(args),
        Command::Certs(args) => run_certs(args),
        Command::Notify(args) => run_notify(*args),
        Command::Crd => match crate::canary_crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, format!("cannot render the CRD: {e}")),
        },
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// The namespace this pod runs in, for the Lease.
fn own_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|ns| ns.trim().to_string())
        .ok()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "canary-notifier".into());
    format!("{host}-{}", std::process::id())
}

fn whole_seconds(flag: &str, d: Duration, min: u64) -> Result<u64, String> {
    if d.subsec_nanos() != 0 || d.as_secs() < min {
        return Err(format!(
            "invalid {flag} {}: use whole seconds, at least {min}s",
            humantime::format_duration(d)
        ));
    }
    Ok(d.as_secs())
}

fn run_serve(args: ServeArgs) -> ExitCode {
    let policy = match args.policy.policy() {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    if args.max_body_bytes == 0 {
        return fail(2, "invalid --max-body-bytes 0: must be at least 1");
    }
    for (flag, value) in [
        ("--tls-reload-interval", args.tls_reload_interval),
        ("--request-timeout", args.request_timeout),
    ] {
        if value < Duration::from_millis(10) {
            return fail(
                2,
                format!("invalid {flag} {value:?}: must be at least 10ms"),
            );
        }
    }
    let notify = match NotifySettings::from_args(&args.notify, policy.clone()) {
        Ok(n) => n,
        Err(e) => return fail(2, e),
    };
    let (duration, grace) = match (
        whole_seconds("--lease-duration", args.lease_duration, 2),
        whole_seconds("--lease-grace", args.lease_grace, 1),
    ) {
        (Ok(d), Ok(g)) if g < d => (d, g),
        (Ok(_), Ok(_)) => {
            return fail(
                2,
                "invalid --lease-grace: must be shorter than --lease-duration",
            );
        }
        (Err(e), _) | (_, Err(e)) => return fail(2, e),
    };
    let leader_settings = LeaderSettings {
        lease_name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(own_namespace),
        identity: args
            .identity
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(default_identity),
        duration,
        grace,
    };
    let cert_settings = match args.cert_mode {
        CertMode::Files => None,
        CertMode::SelfManaged if args.admission_only => {
            return fail(
                2,
                "--cert-mode self-managed needs Kubernetes; it cannot be used with --admission-only",
            );
        }
        CertMode::SelfManaged => {
            if args.cert_validity.is_zero()
                || args.ca_validity < args.cert_validity
                || args.cert_check_interval.is_zero()
            {
                return fail(
                    2,
                    "invalid certificate timings: --cert-validity and --cert-check-interval must be positive, \
                     and --ca-validity at least --cert-validity",
                );
            }
            Some(crate::self_managed_certs::CertSettings {
                namespace: leader_settings.namespace.clone(),
                secret_name: args.cert_secret.clone(),
                service_name: args.service_name.clone(),
                webhook_config_name: args.webhook_config_name.clone(),
                ca_validity: args.ca_validity,
                cert_validity: args.cert_validity,
                check_interval: args.cert_check_interval,
            })
        }
    };
    let controller_settings = ControllerSettings {
        namespace: args.namespace.clone().filter(|n| !n.is_empty()),
        events_from: args.events_from,
        max_age: args.max_notification_age,
        requeue_backoff: args.notify.retry_backoff,
        instance: leader_settings.identity.clone(),
    };
    let settings = ServeSettings {
        listen_addr: args.listen_addr,
        metrics_addr: args.metrics_addr,
        tls: CertificateFiles {
            cert: args.tls_cert_file,
            key: args.tls_key_file,
        },
        tls_reload_interval: args.tls_reload_interval,
        request_timeout: args.request_timeout,
        drain_timeout: args.drain_timeout,
        max_body_bytes: args.max_body_bytes,
        policy,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start the async runtime: {e}")),
    };
    let admission_only = args.admission_only;
    let result = runtime.block_on(async move {
        crate::tls::install_crypto_provider();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = std::sync::Arc::new(stop_tx);
        let signal_tx = stop_tx.clone();
        tokio::spawn(async move {
            serve::shutdown_signal().await;
            let _ = signal_tx.send(true);
        });
        let server = BoundServer::bind(settings).await?;
        let mut admission_stop = stop_rx.clone();
        let admission_stopped = async move {
            let _ = admission_stop.wait_for(|stop| *stop).await;
        };
        if admission_only {
            return server.run(admission_stopped).await;
        }
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("cannot connect to Kubernetes (in-cluster config or KUBECONFIG): {e}")
        })?;
        controller::check_crd(&client, controller_settings.namespace.as_deref()).await?;
        let metrics = server.metrics();
        let sender = std::sync::Arc::new(Sender::new(&notify, metrics.clone())?);
        let term = {
            let (client, metrics) = (client.clone(), metrics.clone());
            move || {
                let dispatcher =
                    Dispatcher::new(sender.clone(), notify.queue_capacity, metrics.clone());
                let controller = controller::run(
                    client.clone(),
                    controller_settings.clone(),
                    notify.clone(),
                    dispatcher,
                    metrics.clone(),
                );
                // The leader also keeps self-managed certificates fresh.
                let certificates = cert_settings
                    .clone()
                    .map(|s| crate::self_managed_certs::run(client.clone(), s));
                async move {
                    match certificates {
                        Some(certificates) => {
                            tokio::join!(controller, certificates);
                        }
                        None => controller.await,
                    }
                }
            }
        };
        let leading = tokio::spawn(leader::lead(
            client,
            leader_settings,
            metrics,
            stop_rx.clone(),
            term,
        ));
        let served = server.run(admission_stopped);
        tokio::pin!(served);
        let mut leading = leading;
        tokio::select! {
            result = &mut served => {
                let _ = stop_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(10), leading).await;
                result
            }
            led = &mut leading => {
                // Leader election failed: stop serving too, so Kubernetes restarts us.
                let _ = stop_tx.send(true);
                let served = served.await;
                match led {
                    Ok(Ok(())) => served,
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("leader election task failed: {e}")),
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, format!("{e:#}")),
    }
}

fn run_check(args: CheckArgs) -> ExitCode {
    let policy = match args.policy.policy() {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    let checked = match check::check_inputs(&args.files, &policy) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    match args.output {
        OutputFormat::Text => print!("{}", check::render_text(&checked)),
        OutputFormat::Json => match serde_json::to_string_pretty(&checked) {
            Ok(json) => println!("{json}"),
            Err(e) => return fail(2, format!("cannot render JSON: {e}")),
        },
    }
    ExitCode::from(check::exit_code(&checked))
}

fn run_certs(args: CertsArgs) -> ExitCode {
    let request = CertRequest {
        service: args.service,
        namespace: args.namespace,
        extra_dns: args.dns,
        extra_ips: args.ip,
        days: args.days,
    };
    let written = request.generate().and_then(|certs| certs.write(&args.out));
    match written {
        Ok(()) => {
            println!(
                "wrote {dir}/ca.crt, {dir}/tls.crt and {dir}/tls.key for {}",
                request.dns_names().join(", "),
                dir = args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, e),
    }
}

fn parse_event_url(raw: &str) -> Result<EventHook, String> {
    let url = url::Url::parse(raw.trim())
        .map_err(|e| format!("--event-url: not a valid absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("--event-url: use an http or https URL with a host".into());
    }
    let mut hook = EventHook::global(url);
    hook.name = "event-url".into();
    hook.timeout = DEFAULT_TIMEOUT;
    Ok(hook)
}

fn run_notify(args: NotifyCommandArgs) -> ExitCode {
    let policy = match args.policy.policy() {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    let settings = match NotifySettings::from_args(&args.notify, policy) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let hooks = match args
        .event_urls
        .iter()
        .map(|u| parse_event_url(u))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(h) => h,
        Err(e) => return fail(2, e),
    };
    if settings.is_empty() && hooks.is_empty() {
        return fail(
            2,
            "nothing to notify: set --slack-url/--slack-token, --msteams-url or --event-webhook, or pass --event-url",
        );
    }
    let event = CanaryEvent {
        name: args.name,
        namespace: args.namespace,
        phase: args.phase,
        checksum: args.checksum,
        message: args.message,
        event_type: args.event_type.unwrap_or(match args.severity {
            Severity::Info => EventType::Normal,
            _ => EventType::Warning,
        }),
        severity: args.severity,
        timestamp_ms: now_ms(),
        fields: AlertFields::default(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        crate::tls::install_crypto_provider();
        let metrics = Metrics::new();
        let sender = match Sender::new(&settings, metrics.clone()) {
            Ok(s) => s,
            Err(e) => return fail(2, e),
        };
        let dispatcher = Dispatcher::new(sender, settings.queue_capacity, metrics);
        let mut deliveries = routing::chat_deliveries(&event, &settings);
        deliveries.extend(routing::event_deliveries(&event, &hooks, &settings));
        let mut pending = Vec::new();
        let mut all_delivered = true;
        for delivery in deliveries {
            match dispatcher.submit(delivery) {
                Ok(report) => pending.push(report),
                Err(full) => {
                    all_delivered = false;
                    println!("{full}");
                }
            }
        }
        for report in pending {
            match report.await {
                Ok(report) => {
                    all_delivered &= report.delivered();
                    println!("{report}");
                }
                Err(_) => {
                    all_delivered = false;
                    println!("a delivery was lost: its worker stopped");
                }
            }
        }
        if all_delivered {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}
