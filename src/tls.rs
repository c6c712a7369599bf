//! Serving TLS with a certificate that reloads from disk without a restart.
//!
//! The files are polled and compared by content rather than watched with inotify:
//! kubelet updates a Secret volume by swapping the `..data` symlink, which never
//! fires a write event on the files themselves. A new pair is swapped in only if
//! it parses and the key matches the certificate; otherwise the old one stays.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Installs ring as the process-wide rustls provider. Explicit, so nothing depends
/// on which crypto features happen to be compiled in. Safe to call repeatedly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not valid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path} holds no usable private key ({reason})")]
    Key { path: PathBuf, reason: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

#[derive(Clone, Debug)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertificateFiles {
    fn read(path: &Path) -> Result<Vec<u8>, CertificateError> {
        std::fs::read(path).map_err(|source| CertificateError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads both files; the bytes are kept to tell whether anything changed.
    pub fn read_pair(&self) -> Result<(Vec<u8>, Vec<u8>), CertificateError> {
        Ok((Self::read(&self.cert)?, Self::read(&self.key)?))
    }

    /// Parses a PEM chain (leaf first, intermediates after) and its private key.
    pub fn parse(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertificateError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertificateError::Pem {
                path: self.cert.clone(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(CertificateError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertificateError::Key {
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        let signing_key =
            provider()
                .key_provider
                .load_private_key(key)
                .map_err(|e| CertificateError::Key {
                    path: self.key.clone(),
                    reason: e.to_string(),
                })?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified
            .keys_match()
            .map_err(|_| CertificateError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
            })?;
        Ok(certified)
    }
}

/// The certificate currently served; `None` until one has loaded.
#[derive(Debug, Default)]
pub struct ReloadingCertificate {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ReloadingCertificate {
    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    fn set(&self, key: CertifiedKey) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(key));
        }
    }

    /// Leaf certificate currently served, for tests and diagnostics.
    pub fn current_leaf(&self) -> Option<CertificateDer<'static>> {
        let current = self.current.read().ok()?;
        current.as_ref().and_then(|k| k.cert.first().cloned())
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

/// TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN, certificate from `resolver`.
pub fn server_config(resolver: Arc<ReloadingCertificate>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What the last poll found, so a bad pair is logged once, not every interval.
#[derive(Debug, PartialEq)]
pub enum ReloadEvent {
    Loaded,
    Unchanged,
    Rejected(String),
}

/// Polls `files` and swaps in each new valid pair.
pub struct CertificateReloader {
    files: CertificateFiles,
    target: Arc<ReloadingCertificate>,
    last_seen: Option<(Vec<u8>, Vec<u8>)>,
    last_error: Option<String>,
}

impl CertificateReloader {
    pub fn new(files: CertificateFiles, target: Arc<ReloadingCertificate>) -> Self {
        CertificateReloader {
            files,
            target,
            last_seen: None,
            last_error: None,
        }
    }

    pub fn poll(&mut self) -> ReloadEvent {
        let pair = match self.files.read_pair() {
            Ok(pair) => pair,
            Err(e) => return self.rejected(e.to_string()),
        };
        if self.last_seen.as_ref() == Some(&pair) {
            return ReloadEvent::Unchanged;
        }
        match self.files.parse(&pair.0, &pair.1) {
            Ok(key) => {
                self.target.set(key);
                self.last_seen = Some(pair);
                self.last_error = None;
                ReloadEvent::Loaded
            }
            Err(e) => self.rejected(e.to_string()),
        }
    }

    fn rejected(&mut self, error: String) -> ReloadEvent {
        if self.last_error.as_ref() == Some(&error) {
            return ReloadEvent::Unchanged;
        }
        self.last_error = Some(error.clone());
        ReloadEvent::Rejected(error)
    }

    /// Polls every `interval` until `stop` turns true, logging each change.
    pub async fn run(
        mut self,
        interval: Duration,
        metrics: crate::metrics::Metrics,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            match self.poll() {
                ReloadEvent::Loaded => {
                    metrics.tls_reload("success");
                    tracing::info!(cert = %self.files.cert.display(), "serving certificate loaded");
                }
                ReloadEvent::Rejected(error) => {
                    metrics.tls_reload("error");
                    if self.target.is_loaded() {
                        tracing::error!(%error, "new certificate rejected; still serving the previous one");
                    } else {
                        tracing::warn!(%error, "no serving certificate yet; not ready until one loads");
                    }
                }
                ReloadEvent::Unchanged => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
