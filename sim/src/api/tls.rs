//! TLS for the fake API server, as a cluster serves it: a CA made at start and a leaf certificate it signs
//! (rustls refuses a self-signed CA used as the server's own certificate), written out with a service-account
//! token so that a test can lay out a kubeconfig or an in-cluster config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The bearer token written next to the CA (the fake accepts any token).
pub const SERVICE_ACCOUNT_TOKEN: &str = "klutch-sim-service-account-token";

/// Where the CA and the token were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA's certificate (PEM): `ca.crt`.
    pub ca: PathBuf,
    /// A service-account token: `token`.
    pub token: PathBuf,
}

/// A fresh CA and a serving certificate it signs, as PEM: what a cluster's API server presents.
pub struct ServingCerts {
    pub ca_cert: String,
    pub cert: String,
    pub key: String,
    /// DER of the leaf and the CA, for a rustls server.
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

/// The names a loopback API server is reached by: `127.0.0.1`, `::1`, `localhost`, `kubernetes.default.svc`.
pub const SERVING_NAMES: [&str; 5] = [
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes.default.svc",
    "kubernetes.default",
];

/// A fresh CA and a leaf for [`SERVING_NAMES`] (rustls refuses a self-signed CA as the server's own
/// certificate, so there are two).
pub fn serving_certs() -> anyhow::Result<ServingCerts> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "klutch-sim CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut leaf = CertificateParams::new(SERVING_NAMES.map(String::from).to_vec())?;
    leaf.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &Issuer::new(ca, ca_key))?;
    Ok(ServingCerts {
        ca_cert: ca_cert.pem(),
        cert: leaf_cert.pem(),
        key: leaf_key.serialize_pem(),
        chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        key_der: leaf_key.serialize_der(),
    })
}

/// Fresh [`serving_certs`]; the CA and a token are written to `dir` (`ca.crt`, `token`).
pub(super) fn acceptor(dir: &Path) -> anyhow::Result<(TlsAcceptor, TlsFiles)> {
    let certs = serving_certs()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = TlsFiles {
        ca: dir.join("ca.crt"),
        token: dir.join("token"),
    };
    std::fs::write(&files.ca, &certs.ca_cert)
        .with_context(|| format!("cannot write {}", files.ca.display()))?;
    std::fs::write(&files.token, SERVICE_ACCOUNT_TOKEN)
        .with_context(|| format!("cannot write {}", files.token.display()))?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.key_der));
    // An explicit provider: a process that links another rustls provider (kube with ring, reqwest with
    // aws-lc-rs) would otherwise panic choosing the default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs.chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), files))
}
