//! Development and static certificates: a CA and a serving certificate for the
//! admission Service, written as `ca.crt`, `tls.crt` and `tls.key`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::Path;
use time::{Duration, OffsetDateTime};

#[derive(Clone, Debug)]
pub struct CertRequest {
    pub service: String,
    pub namespace: String,
    pub extra_dns: Vec<String>,
    pub extra_ips: Vec<IpAddr>,
    pub days: u32,
}

/// PEM text of a CA certificate, a leaf signed by it, and the leaf's key.
#[derive(Clone, Debug)]
pub struct GeneratedCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("invalid certificate request: {0}")]
    Invalid(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl CertRequest {
    /// The names the API server may use for the Service, plus the extras.
    pub fn dns_names(&self) -> Vec<String> {
        let (s, ns) = (&self.service, &self.namespace);
        let mut names = vec![
            s.clone(),
            format!("{s}.{ns}"),
            format!("{s}.{ns}.svc"),
            format!("{s}.{ns}.svc.cluster.local"),
        ];
        for extra in &self.extra_dns {
            if !names.contains(extra) {
                names.push(extra.clone());
            }
        }
        names
    }

    pub fn generate(&self) -> Result<GeneratedCerts, CertsError> {
        for (what, value) in [
            ("--service", &self.service),
            ("--namespace", &self.namespace),
        ] {
            if value.is_empty()
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(CertsError::Invalid(format!(
                    "{what} \"{value}\" is not a valid DNS label"
                )));
            }
        }
        if self.days == 0 {
            return Err(CertsError::Invalid("--days must be at least 1".into()));
        }
        // Backdated a little so a node with a slightly slow clock accepts it.
        let not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        let not_after = OffsetDateTime::now_utc() + Duration::days(i64::from(self.days));

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("canary-notifier CA ({})", self.namespace),
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.not_before = not_before;
        ca_params.not_after = not_after;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(self.dns_names())?;
        params
            .subject_alt_names
            .extend(self.extra_ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name.push(
            DnType::CommonName,
            format!("{}.{}.svc", self.service, self.namespace),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;

        Ok(GeneratedCerts {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn offset(t: std::time::SystemTime) -> OffsetDateTime {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn ca_params(common_name: &str) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A CA named `common_name` valid from `not_before` to `not_after`: (cert PEM, key PEM).
pub fn new_ca(
    common_name: &str,
    not_before: std::time::SystemTime,
    not_after: std::time::SystemTime,
) -> Result<(String, String), CertsError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params(common_name)?;
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    Ok((params.self_signed(&key)?.pem(), key.serialize_pem()))
}

/// A serving certificate for `dns_names`, signed by the CA `ca_common_name` whose
/// key is `ca_key_pem` (the issuer is rebuilt from its name and key).
pub fn new_leaf(
    dns_names: Vec<String>,
    ca_common_name: &str,
    ca_key_pem: &str,
    not_before: std::time::SystemTime,
    not_after: std::time::SystemTime,
) -> Result<(String, String), CertsError> {
    let issuer = Issuer::new(ca_params(ca_common_name)?, KeyPair::from_pem(ca_key_pem)?);
    let common_name = dns_names.first().cloned().unwrap_or_default();
    let mut params = CertificateParams::new(dns_names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    let key = KeyPair::generate()?;
    Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
}

impl GeneratedCerts {
    /// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), CertsError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CertsError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for (name, pem, private) in [
            ("ca.crt", &self.ca_pem, false),
            ("tls.crt", &self.cert_pem, false),
            ("tls.key", &self.key_pem, true),
        ] {
            let path = dir.join(name);
            write_file(&path, pem.as_bytes(), private).map_err(io(&path))?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CertRequest {
        CertRequest {
            service: "canary-notifier".into(),
            namespace: "flagger-system".into(),
            extra_dns: vec!["localhost".into()],
            extra_ips: vec!["127.0.0.1".parse().unwrap()],
            days: 30,
        }
    }

    #[test]
    fn names_cover_every_service_form() {
        assert_eq!(
            request().dns_names(),
            [
                "canary-notifier",
                "canary-notifier.flagger-system",
                "canary-notifier.flagger-system.svc",
                "canary-notifier.flagger-system.svc.cluster.local",
                "localhost"
            ]
        );
    }

    #[test]
    fn generated_pair_loads_and_files_are_written() {
        crate::tls::install_crypto_provider();
        let certs = request().generate().unwrap();
        assert!(certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key_pem.contains("PRIVATE KEY"));
        let dir = tempfile::tempdir().unwrap();
        certs.write(dir.path()).unwrap();
        let files = crate::tls::CertificateFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        let (c, k) = files.read_pair().unwrap();
        files.parse(&c, &k).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_requests_are_refused() {
        for (service, namespace, days) in [
            ("", "ns", 1),
            ("svc", "a b", 1),
            ("svc", "ns", 0),
            ("a/b", "ns", 1),
        ] {
            let r = CertRequest {
                service: service.into(),
                namespace: namespace.into(),
                days,
                ..request()
            };
            assert!(
                matches!(r.generate(), Err(CertsError::Invalid(_))),
                "{service} {namespace} {days}"
            );
        }
    }
}
