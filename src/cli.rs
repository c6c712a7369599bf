//! Command line: `serve`, `check` and `certs`. Every `serve` flag also reads an
//! environment variable (`CANARY_NOTIFIER_*`), so a Deployment can set them either way.

use crate::certs::CertRequest;
use crate::check;
use crate::destination_policy::DestinationPolicy;
use crate::logging::{self, LogFormat};
use crate::serve::{self, BoundServer, ServeSettings};
use crate::tls::CertificateFiles;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhooks over HTTPS and /healthz, /readyz, /metrics over HTTP.
    Serve(ServeArgs),
    /// Run admission defaulting and validation on Canaries in files (YAML or JSON).
    Check(CheckArgs),
    /// Write a CA and a serving certificate for the admission Service.
    Certs(CertsArgs),
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

#[derive(Debug, Args)]
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
    #[command(flatten)]
    pub policy: PolicyArgs,
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

/// Exit codes: 0 success; 1 a check denied something or serving failed; 2 bad
/// input or settings.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Check(args) => run_check(args),
        Command::Certs(args) => run_certs(args),
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
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
    if !args.admission_only {
        tracing::info!(
            "the notification controller is not part of this build yet; serving admission only"
        );
    }
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
    let result = runtime.block_on(async move {
        let server = BoundServer::bind(settings).await?;
        server.run(serve::shutdown_signal()).await
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
