//! Certificate hot reload, including the way kubelet updates a Secret volume:
//! files are symlinks through `..data`, which is swapped atomically.

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;
use support::{RunningServer, generate_certs, served_leaf, settings};

/// Writes a new timestamped directory and swaps `..data` to it, as kubelet does.
fn kubelet_update(dir: &Path, version: &str, cert_pem: &str, key_pem: &str) {
    let target = dir.join(format!("..{version}"));
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(target.join("tls.key"), key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

fn leaf_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

async fn wait_for_leaf(server: &RunningServer, ca: &str, want: &CertificateDer<'static>) {
    for _ in 0..100 {
        if served_leaf(server.admission, ca).await.ok().as_ref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the new certificate was never served");
}

/// Root CA -> intermediate CA -> leaf; returns (root pem, chain pem, key pem).
fn chained_certs() -> (String, String, String) {
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root_cert = root.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root, root_key);

    let mid_key = KeyPair::generate().unwrap();
    let mut mid = CertificateParams::new(Vec::<String>::new()).unwrap();
    mid.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    mid.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    mid.use_authority_key_identifier_extension = true;
    let mid_cert = mid.signed_by(&mid_key, &root_issuer).unwrap();
    let mid_issuer = Issuer::new(mid, mid_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf.signed_by(&leaf_key, &mid_issuer).unwrap();
    (
        root_cert.pem(),
        format!("{}{}", leaf_cert.pem(), mid_cert.pem()),
        leaf_key.serialize_pem(),
    )
}

#[tokio::test]
async fn symlink_swap_reloads_and_bad_pairs_keep_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = generate_certs();
    kubelet_update(
        dir.path(),
        "2026_11_27_00_00_00.1",
        &first.cert_pem,
        &first.key_pem,
    );
    let server = RunningServer::start(settings(dir.path())).await;
    assert_eq!(
        served_leaf(server.admission, &first.ca_pem).await.unwrap(),
        leaf_of(&first.cert_pem)
    );

    // A renewed pair from a new CA: served without a restart.
    let second = generate_certs();
    kubelet_update(
        dir.path(),
        "2026_11_27_00_01_00.2",
        &second.cert_pem,
        &second.key_pem,
    );
    wait_for_leaf(&server, &second.ca_pem, &leaf_of(&second.cert_pem)).await;

    // Invalid updates: a key that does not match, garbage, an empty certificate.
    let other = generate_certs();
    let bad = [
        (second.cert_pem.as_str(), other.key_pem.as_str()),
        (
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            second.key_pem.as_str(),
        ),
        ("", second.key_pem.as_str()),
        (second.cert_pem.as_str(), "no key here"),
    ];
    for (i, (cert, key)) in bad.iter().enumerate() {
        kubelet_update(dir.path(), &format!("2026_11_27_00_02_0{i}.3"), cert, key);
        // Several reload intervals pass; the previous certificate stays.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            served_leaf(server.admission, &second.ca_pem).await.unwrap(),
            leaf_of(&second.cert_pem),
            "bad pair {i}"
        );
        assert_eq!(server.readyz().await, 200);
    }

    // A chain (leaf + intermediate) is served whole: a client trusting only the root connects.
    let (root, chain, key) = chained_certs();
    kubelet_update(dir.path(), "2026_11_27_00_03_00.4", &chain, &key);
    wait_for_leaf(&server, &root, &leaf_of(&chain)).await;

    let metrics = reqwest::get(format!("http://{}/metrics", server.ops))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"canary_notifier_tls_certificate_reloads_total{result="success"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"canary_notifier_tls_certificate_reloads_total{result="error"} 4"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn not_ready_until_a_certificate_appears() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start_unready(settings(dir.path())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.readyz().await, 503);
    let body = reqwest::get(format!("http://{}/readyz", server.ops))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "not ready: no serving certificate loaded yet\n");
    let healthz = reqwest::get(format!("http://{}/healthz", server.ops))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "alive even without a certificate");

    let certs = generate_certs();
    certs.write(dir.path()).unwrap();
    server.wait_ready().await;
    assert_eq!(
        served_leaf(server.admission, &certs.ca_pem).await.unwrap(),
        leaf_of(&certs.cert_pem)
    );
    server.stop().await;
}
