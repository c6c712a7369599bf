//! Self-managed certificates (the default install): the leader keeps a CA and a
//! serving certificate in a Secret, injects the CA bundle into both webhook
//! configurations, and renews ahead of expiry. Every replica serves the Secret's
//! pair through its volume mount and the file reload of `tls`.
//!
//! Rotation never breaks a request: a new CA joins the bundle (and the bundle
//! reaches the webhook configurations) before any certificate it signed is served,
//! and an old CA stays in the bundle until it expires.

use crate::certs::{self, CertsError};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

const CAS_ANNOTATION: &str = "canary-notifier.dev/cas";
const LEAF_ANNOTATION: &str = "canary-notifier.dev/serving-cert";
/// Backdating for clock skew between nodes.
const SKEW: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct CertSettings {
    pub namespace: String,
    pub secret_name: String,
    pub service_name: String,
    pub webhook_config_name: String,
    pub ca_validity: Duration,
    pub cert_validity: Duration,
    pub check_interval: Duration,
}

impl CertSettings {
    fn dns_names(&self) -> Vec<String> {
        let (s, ns) = (&self.service_name, &self.namespace);
        vec![
            format!("{s}.{ns}.svc"),
            format!("{s}.{ns}.svc.cluster.local"),
            format!("{s}.{ns}"),
            s.clone(),
        ]
    }
}

/// One CA of the bundle, as recorded in the Secret's annotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaInfo {
    pub name: String,
    pub not_after: String,
    #[serde(skip)]
    pub pem: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeafInfo {
    pub issuer: String,
    pub not_after: String,
}

/// The Secret's content: the CA bundle (newest first), the newest CA's key, and the
/// serving pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    pub cas: Vec<CaInfo>,
    pub ca_key: String,
    pub leaf: String,
    pub leaf_key: String,
    pub leaf_info: LeafInfo,
}

fn time(s: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(s).unwrap_or(SystemTime::UNIX_EPOCH)
}

fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn split_pems(bundle: &str) -> Vec<String> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .map(|p| p.trim().to_string())
        .filter(|p| p.starts_with("-----BEGIN CERTIFICATE-----"))
        .map(|p| format!("{p}\n"))
        .collect()
}

impl Material {
    pub fn bundle(&self) -> String {
        self.cas.iter().map(|c| c.pem.as_str()).collect()
    }

    pub fn from_secret(secret: &Secret) -> Option<Material> {
        let data = secret.data.as_ref()?;
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let annotations = secret.metadata.annotations.as_ref()?;
        let mut cas: Vec<CaInfo> = serde_json::from_str(annotations.get(CAS_ANNOTATION)?).ok()?;
        let pems = split_pems(&text("ca.crt")?);
        if pems.len() != cas.len() || cas.is_empty() {
            return None;
        }
        for (ca, pem) in cas.iter_mut().zip(pems) {
            ca.pem = pem;
        }
        Some(Material {
            cas,
            ca_key: text("ca.key")?,
            leaf: text("tls.crt")?,
            leaf_key: text("tls.key")?,
            leaf_info: serde_json::from_str(annotations.get(LEAF_ANNOTATION)?).ok()?,
        })
    }

    fn into_secret(self, settings: &CertSettings, resource_version: Option<String>) -> Secret {
        let bundle = self.bundle();
        let data = BTreeMap::from([
            ("ca.crt".to_string(), ByteString(bundle.into_bytes())),
            ("ca.key".to_string(), ByteString(self.ca_key.into_bytes())),
            ("tls.crt".to_string(), ByteString(self.leaf.into_bytes())),
            (
                "tls.key".to_string(),
                ByteString(self.leaf_key.into_bytes()),
            ),
        ]);
        let annotations = BTreeMap::from([
            (
                CAS_ANNOTATION.to_string(),
                serde_json::to_string(&self.cas).unwrap_or_default(),
            ),
            (
                LEAF_ANNOTATION.to_string(),
                serde_json::to_string(&self.leaf_info).unwrap_or_default(),
            ),
        ]);
        Secret {
            metadata: ObjectMeta {
                name: Some(settings.secret_name.clone()),
                namespace: Some(settings.namespace.clone()),
                annotations: Some(annotations),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".into(),
                    "canary-notifier".into(),
                )])),
                resource_version,
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Default::default()
        }
    }
}

/// What the Secret needs next. One step at a time, so the bundle can reach the
/// webhook configurations between adding a CA and serving what it signed.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// No (readable) Secret: a new CA and serving certificate.
    Create(Material),
    /// The bundle changed (a new CA added, or expired ones dropped).
    Rebundle(Material),
    /// A new serving certificate from the newest CA.
    Reissue(Material),
}

fn new_ca_info(now: SystemTime, validity: Duration) -> Result<(CaInfo, String), CertsError> {
    let not_after = now + validity;
    let name = format!("canary-notifier CA {}", stamp(now));
    let (pem, key) = certs::new_ca(&name, now - SKEW, not_after)?;
    Ok((
        CaInfo {
            name,
            not_after: stamp(not_after),
            pem,
        },
        key,
    ))
}

fn issue(
    material: &mut Material,
    settings: &CertSettings,
    now: SystemTime,
) -> Result<(), CertsError> {
    let newest = &material.cas[0];
    // Never outlive the CA that signs it.
    let not_after = (now + settings.cert_validity).min(time(&newest.not_after));
    let (leaf, key) = certs::new_leaf(
        settings.dns_names(),
        &newest.name,
        &material.ca_key,
        now - SKEW,
        not_after,
    )?;
    material.leaf = leaf;
    material.leaf_key = key;
    material.leaf_info = LeafInfo {
        issuer: newest.name.clone(),
        not_after: stamp(not_after),
    };
    Ok(())
}

/// Renew when less than a third of the validity is left.
fn due(not_after: SystemTime, validity: Duration, now: SystemTime) -> bool {
    not_after
        .duration_since(now)
        .map_or(true, |left| left < validity / 3)
}

pub fn next_step(
    current: Option<&Material>,
    settings: &CertSettings,
    now: SystemTime,
) -> Result<Step, CertsError> {
    let Some(current) = current else {
        let (ca, ca_key) = new_ca_info(now, settings.ca_validity)?;
        let mut m = Material {
            cas: vec![ca],
            ca_key,
            leaf: String::new(),
            leaf_key: String::new(),
            leaf_info: LeafInfo {
                issuer: String::new(),
                not_after: String::new(),
            },
        };
        issue(&mut m, settings, now)?;
        return Ok(Step::Create(m));
    };
    let mut m = current.clone();
    // Expired CAs leave the bundle (the newest always stays).
    let newest = m.cas[0].clone();
    m.cas
        .retain(|c| c.name == newest.name || time(&c.not_after) > now);
    if due(time(&newest.not_after), settings.ca_validity, now) {
        let (ca, key) = new_ca_info(now, settings.ca_validity)?;
        m.cas.insert(0, ca);
        m.ca_key = key;
    }
    if m.cas != current.cas {
        return Ok(Step::Rebundle(m));
    }
    if m.leaf_info.issuer != m.cas[0].name
        || due(time(&m.leaf_info.not_after), settings.cert_validity, now)
    {
        issue(&mut m, settings, now)?;
        return Ok(Step::Reissue(m));
    }
    Ok(Step::Nothing)
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] CertsError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Sets `caBundle` on every webhook of the configuration `name` of kind `K`;
/// retries on conflict (someone else wrote it in between).
async fn inject_into<K>(
    client: &Client,
    name: &str,
    bundle: &ByteString,
    client_configs: for<'a> fn(&'a mut K) -> Vec<&'a mut WebhookClientConfig>,
) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    for _ in 0..5 {
        let mut config = api.get(name).await?;
        let mut changed = false;
        for c in client_configs(&mut config) {
            if c.ca_bundle.as_ref() != Some(bundle) {
                c.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sets `caBundle` in both webhook configurations.
async fn inject(client: &Client, settings: &CertSettings, bundle: &str) -> Result<(), kube::Error> {
    let bundle = ByteString(bundle.as_bytes().to_vec());
    let name = &settings.webhook_config_name;
    inject_into::<MutatingWebhookConfiguration>(client, name, &bundle, |c| {
        c.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    })
    .await?;
    inject_into::<ValidatingWebhookConfiguration>(client, name, &bundle, |c| {
        c.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    })
    .await
}

/// Brings the Secret and both `caBundle`s up to date.
pub async fn reconcile_certificates(
    client: &Client,
    settings: &CertSettings,
) -> Result<(), CertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    for _ in 0..6 {
        let existing = secrets.get_opt(&settings.secret_name).await?;
        let current = existing.as_ref().and_then(Material::from_secret);
        let version = existing
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone());
        match next_step(current.as_ref(), settings, SystemTime::now())? {
            Step::Nothing => {
                if let Some(m) = current {
                    inject(client, settings, &m.bundle()).await?;
                }
                return Ok(());
            }
            Step::Create(m) if existing.is_none() => {
                tracing::info!(secret = %settings.secret_name, "creating the CA and serving certificate");
                let bundle = m.bundle();
                match secrets
                    .create(&PostParams::default(), &m.into_secret(settings, None))
                    .await
                {
                    // Another leader was faster: read it again.
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
                inject(client, settings, &bundle).await?;
            }
            // Present but unreadable: replaced, like a missing one.
            Step::Create(m) | Step::Rebundle(m) => {
                tracing::info!(secret = %settings.secret_name, cas = m.cas.len(), "updating the CA bundle");
                let bundle = m.bundle();
                secrets
                    .replace(
                        &settings.secret_name,
                        &PostParams::default(),
                        &m.into_secret(settings, version),
                    )
                    .await?;
                inject(client, settings, &bundle).await?;
            }
            Step::Reissue(m) => {
                // The bundle must already trust the new issuer before its certificate is served.
                inject(client, settings, &m.bundle()).await?;
                tracing::info!(secret = %settings.secret_name, issuer = %m.leaf_info.issuer, "renewing the serving certificate");
                secrets
                    .replace(
                        &settings.secret_name,
                        &PostParams::default(),
                        &m.into_secret(settings, version),
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Keeps certificates fresh while this replica leads.
pub async fn run(client: Client, settings: CertSettings) {
    loop {
        if let Err(e) = reconcile_certificates(&client, &settings).await {
            tracing::error!(error = %e, "cannot maintain the self-managed certificates; retrying");
        }
        tokio::time::sleep(settings.check_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CertSettings {
        CertSettings {
            namespace: "canary-notifier".into(),
            secret_name: "canary-notifier-tls".into(),
            service_name: "canary-notifier".into(),
            webhook_config_name: "canary-notifier".into(),
            ca_validity: Duration::from_secs(3000),
            cert_validity: Duration::from_secs(900),
            check_interval: Duration::from_secs(1),
        }
    }

    fn material(step: Step) -> Material {
        match step {
            Step::Create(m) | Step::Rebundle(m) | Step::Reissue(m) => m,
            Step::Nothing => panic!("no material"),
        }
    }

    #[test]
    fn lifecycle_of_cas_and_serving_certificates() {
        crate::tls::install_crypto_provider();
        let s = settings();
        let t0 = humantime::parse_rfc3339("2026-11-27T00:00:00Z").unwrap();
        let m = material(next_step(None, &s, t0).unwrap());
        assert_eq!(m.cas.len(), 1);
        assert_eq!(m.leaf_info.issuer, m.cas[0].name);
        assert_eq!(
            next_step(Some(&m), &s, t0 + Duration::from_secs(60)).unwrap(),
            Step::Nothing
        );
        // The serving certificate is renewed in its last third, by the same CA.
        let step = next_step(Some(&m), &s, t0 + Duration::from_secs(700)).unwrap();
        let renewed = match step {
            Step::Reissue(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(renewed.cas, m.cas);
        assert_ne!(renewed.leaf, m.leaf);
        // The CA rotates in its last third: first the bundle grows (old and new) ...
        let t1 = t0 + Duration::from_secs(2100);
        let grown = match next_step(Some(&renewed), &s, t1).unwrap() {
            Step::Rebundle(g) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!(grown.cas.len(), 2);
        assert_eq!(grown.cas[1], m.cas[0]);
        assert_eq!(
            grown.leaf, renewed.leaf,
            "nothing signed by the new CA is served yet"
        );
        // ... then the serving certificate moves to the new CA.
        let moved = match next_step(Some(&grown), &s, t1).unwrap() {
            Step::Reissue(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(moved.leaf_info.issuer, grown.cas[0].name);
        // Once the old CA expires it leaves the bundle.
        let pruned = match next_step(Some(&moved), &s, t0 + Duration::from_secs(3001)).unwrap() {
            Step::Rebundle(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(pruned.cas.len(), 1);
        assert_eq!(pruned.cas[0], grown.cas[0]);
    }

    #[test]
    fn material_round_trips_through_the_secret() {
        crate::tls::install_crypto_provider();
        let s = settings();
        let m = material(next_step(None, &s, SystemTime::now()).unwrap());
        let secret = m.clone().into_secret(&s, None);
        assert_eq!(Material::from_secret(&secret), Some(m));
        assert_eq!(Material::from_secret(&Secret::default()), None);
    }
}
