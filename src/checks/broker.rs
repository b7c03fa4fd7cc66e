//! The `broker` signal: asks each ProviderConfig's broker itself whether it answers, minutes before
//! provider-anynines can say so. The provider checks a broker every 3 minutes while it is healthy (every 30 s
//! while it fails), and `status.health` and `/backend-health` change only then; this check sends `HEAD
//! <spec.url><spec.healthCheckEndpoint>` (default `/instances`) every `interval`, **without credentials**:
//! any answer below 500 — 401 and 403 included — proves the broker answers. Refused, reset, timed out, a TLS
//! handshake that fails for another reason than trust, or a 5xx fails the ProviderConfig's item.
//!
//! It reads only the ProviderConfigs' `spec.url`, `spec.healthCheckEndpoint`, `spec.serviceType` and
//! `spec.tls` (its own watch, [`BrokerConfig`]), never a Secret, and sends nothing that needs protecting. The
//! ProviderConfig's TLS settings decide what is verified: `insecureSkipVerify`, or a CA bundle in a Secret
//! (which it does not read), verify nothing and the item says so; otherwise the host's CA certificates, for
//! `overrideServerName` when set. A certificate they do not trust warns: the broker answers, but
//! provider-anynines would refuse it too.
//!
//! The watch is the part [`crate::reserved::WATCH`] (its waiting and broken states land there); the probes
//! are the part [`PROBES`], published after each round. Probes run on their own clock, never per request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use kube::api::{ApiResource, GroupVersionKind, ObjectMeta};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::{CheckType, Run, WatchSpec};
use crate::human::{self, cut, error_chain, NAME_LIMIT};
use crate::metrics::Metrics;
use crate::signals::{ObjectRef, Observation, Sink};
use crate::values::{duration, KeyError};
use crate::verdict::report::Status;

/// The keys of a `broker` check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Broker {
    /// The ProviderConfigs' API group, version and plural.
    pub group: String,
    pub version: String,
    pub plural: String,
    /// How often each broker is asked.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// How long one question may take, connection and TLS handshake included.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How many brokers are asked at once.
    pub concurrency: usize,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            group: "dataservices.anynines.com".into(),
            version: "v1".into(),
            plural: "providerconfigs".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            concurrency: 8,
        }
    }
}

/// The part that publishes the probes' items.
pub const PROBES: &str = "probes";

/// The health path provider-anynines asks when `spec.healthCheckEndpoint` is not set.
pub const DEFAULT_PATH: &str = "/instances";

impl CheckType for Broker {
    const NAME: &'static str = "broker";

    fn validate(&self, _cluster: Option<&str>) -> Result<(), KeyError> {
        if self.interval.is_zero() {
            return Err(KeyError::new("interval", "must be more than 0s"));
        }
        if self.timeout.is_zero() {
            return Err(KeyError::new("timeout", "must be more than 0s"));
        }
        if self.concurrency == 0 {
            return Err(KeyError::new("concurrency", "must be at least 1"));
        }
        Ok(())
    }

    fn start(&self, run: &mut Run<'_>) {
        // The watch hands the brokers to ask to the prober; `None` until it has listed.
        let (targets, listed) = watch::channel(None::<Arc<[Target]>>);
        let targets = Arc::new(targets);
        run.follow_part(
            crate::reserved::WATCH,
            WatchSpec::<BrokerConfig>::cluster_scoped(self.resource(), |_| {}),
            move |objects: &[Arc<BrokerConfig>], _, now| {
                let mut now_listed: Vec<Target> = objects.iter().map(|o| o.target()).collect();
                now_listed.sort_by(|a, b| a.name.cmp(&b.name));
                let none = now_listed.is_empty();
                targets.send_if_modified(|held| {
                    let changed = held.as_deref() != Some(&now_listed[..]);
                    if changed {
                        *held = Some(now_listed.into());
                    }
                    changed
                });
                if none {
                    return vec![Observation::new(
                        crate::reserved::NONE,
                        Status::Warn,
                        "no ProviderConfigs exist: there is no broker to ask",
                        now.wall,
                    )];
                }
                Vec::new()
            },
        );
        let config = self.clone();
        run.poll(&[], move |check: &str, sink: &Sink, _: &Arc<Metrics>| {
            probing(check.into(), config.clone(), listed.clone(), sink.clone())
        });
    }
}

impl Broker {
    fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&self.group, &self.version, "ProviderConfig"),
            &self.plural,
        )
    }
}

/// Asks every listed broker each `interval` (and at once when the list changes), publishing each round.
async fn probing(
    check: Arc<str>,
    config: Broker,
    mut listed: watch::Receiver<Option<Arc<[Target]>>>,
    sink: Sink,
) {
    // Unsynced until the first round: the check must not look complete with the watch alone.
    sink.publish_part(&check, PROBES, Vec::new(), true);
    let tls = Arc::new(TlsConfigs::host());
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Vec<(String, Status)> = Vec::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = listed.changed() => {
                if changed.is_err() {
                    return;
                }
                ticks.reset();
            }
        }
        let Some(targets) = listed.borrow_and_update().clone() else {
            continue;
        };
        let items = round(&targets, &config, &tls).await;
        for o in &items {
            let before = last.iter().find(|(n, _)| *n == o.item).map(|(_, s)| *s);
            match (before, o.status) {
                (Some(Status::Pass) | None, Status::Fail) => {
                    tracing::warn!(check = %check, provider_config = %o.item, reason = %o.message, "broker does not answer")
                }
                (Some(Status::Fail), Status::Pass) => {
                    tracing::info!(check = %check, provider_config = %o.item, "broker answers again")
                }
                _ => {}
            }
        }
        last = items.iter().map(|o| (o.item.clone(), o.status)).collect();
        sink.publish_part(&check, PROBES, items, false);
    }
}

/// One round: every target asked, at most `concurrency` at once, each bounded by `timeout`; items in the
/// targets' order.
async fn round(targets: &[Target], config: &Broker, tls: &Arc<TlsConfigs>) -> Vec<Observation> {
    let timeout = config.timeout;
    futures::stream::iter(targets.iter().cloned())
        .map(|t| {
            let tls = tls.clone();
            async move {
                let plan = match plan(&t.endpoint) {
                    Ok(p) => p,
                    Err(e) => {
                        return Observation::new(
                            &t.name,
                            Status::Fail,
                            e.to_string(),
                            Timestamp::now(),
                        )
                        .regarding(t.object())
                    }
                };
                let answer = probe(&plan, &tls, timeout).await;
                verdict(&t, &plan, answer, Timestamp::now()).regarding(t.object())
            }
        })
        .buffered(config.concurrency)
        .collect()
        .await
}

/// A ProviderConfig as this check reads it: its name and where its broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub uid: Option<String>,
    pub endpoint: Endpoint,
}

impl Target {
    fn object(&self) -> ObjectRef {
        ObjectRef {
            api_version: "dataservices.anynines.com/v1".into(),
            kind: "ProviderConfig".into(),
            name: self.name.clone(),
            namespace: None,
            uid: self.uid.clone(),
        }
    }
}

/// Where a ProviderConfig's broker is, and how to talk to it: what its spec says, nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// `spec.url`.
    pub url: Option<String>,
    /// `spec.healthCheckEndpoint`.
    pub health_check_endpoint: Option<String>,
    /// `spec.serviceType`: `servicebroker` or `backupmanager`.
    pub service_type: Option<String>,
    pub tls: Tls,
}

/// `spec.tls` of a ProviderConfig.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// `insecureSkipVerify`.
    pub insecure_skip_verify: bool,
    /// `overrideServerName`: the name the certificate is checked for.
    pub override_server_name: Option<String>,
    /// `caBundleSecretRef` as `namespace/name`: where the CA is. Never read.
    pub ca_bundle_secret: Option<String>,
}

/// A ProviderConfig as the watch delivers it: its name, and [`Endpoint`]. The credentials, the status and
/// every other field are skipped by serde as they are parsed, never kept.
#[derive(Debug, Clone, Default)]
pub struct BrokerConfig {
    /// Only the name, uid and `resourceVersion` (from which the watch resumes).
    meta: ObjectMeta,
    pub endpoint: Endpoint,
}

impl BrokerConfig {
    fn target(&self) -> Target {
        Target {
            name: self.meta.name.clone().unwrap_or_default(),
            uid: self.meta.uid.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

crate::checks::dynamic_resource!(BrokerConfig);

/// The wire shape, reduced to the fields read.
#[derive(Deserialize)]
struct Wire {
    metadata: Option<WireMeta>,
    spec: Option<WireSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    url: Option<String>,
    health_check_endpoint: Option<String>,
    service_type: Option<String>,
    tls: Option<WireTls>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTls {
    insecure_skip_verify: Option<bool>,
    override_server_name: Option<String>,
    ca_bundle_secret_ref: Option<WireSecretRef>,
}

#[derive(Deserialize)]
struct WireSecretRef {
    namespace: Option<String>,
    name: Option<String>,
}

impl<'de> Deserialize<'de> for BrokerConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BrokerConfig, D::Error> {
        let wire = Wire::deserialize(d)?;
        // Written by whoever may edit ProviderConfigs: bounded like every string kept from an object.
        let bounded = |s: Option<String>| s.map(|s| cut(s, NAME_LIMIT));
        let long = |s: Option<String>| s.map(|s| cut(s, human::MESSAGE_LIMIT));
        let meta = wire
            .metadata
            .map_or_else(ObjectMeta::default, |m| ObjectMeta {
                name: bounded(m.name),
                uid: bounded(m.uid),
                resource_version: bounded(m.resource_version),
                ..ObjectMeta::default()
            });
        let spec = wire.spec;
        let tls = spec.as_ref().and_then(|s| s.tls.as_ref());
        let endpoint = Endpoint {
            url: long(spec.as_ref().and_then(|s| s.url.clone())),
            health_check_endpoint: long(
                spec.as_ref().and_then(|s| s.health_check_endpoint.clone()),
            ),
            service_type: bounded(spec.as_ref().and_then(|s| s.service_type.clone())),
            tls: Tls {
                insecure_skip_verify: tls.and_then(|t| t.insecure_skip_verify) == Some(true),
                override_server_name: bounded(tls.and_then(|t| t.override_server_name.clone()))
                    .filter(|n| !n.is_empty()),
                ca_bundle_secret: tls.and_then(|t| t.ca_bundle_secret_ref.as_ref()).map(|r| {
                    cut(
                        format!(
                            "{}/{}",
                            r.namespace.as_deref().unwrap_or_default(),
                            r.name.as_deref().unwrap_or_default()
                        ),
                        NAME_LIMIT,
                    )
                }),
            },
        };
        Ok(BrokerConfig { meta, endpoint })
    }
}

/// Why a ProviderConfig's spec gives no URL to ask.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("spec.url is not set: provider-anynines cannot reach this broker either; set spec.url on the ProviderConfig")]
    NoUrl,
    #[error("{url:?} (spec.url + spec.healthCheckEndpoint) is no http:// or https:// URL ({reason}); fix spec.url on the ProviderConfig")]
    Invalid { url: String, reason: String },
}

/// How one broker is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The URL asked, for messages: `https://broker.example:3000/instances`.
    pub url: String,
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// Path and query.
    path: String,
    /// `None`: plain HTTP.
    pub tls: Option<TlsPlan>,
}

/// What a TLS handshake checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    /// The name sent (SNI) and checked: `overrideServerName`, else the URL's host.
    pub server_name: String,
    pub verify: Verify,
}

/// Whether a broker's certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Against the CA certificates of the host klutch-health runs on.
    HostRoots,
    /// Not at all, and why: the words the item adds.
    Nothing(String),
}

/// The URL and TLS a ProviderConfig's spec asks for: `spec.url` + `spec.healthCheckEndpoint` (default
/// `/instances`), joined with exactly one `/`.
pub fn plan(e: &Endpoint) -> Result<Plan, PlanError> {
    let base = e
        .url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or(PlanError::NoUrl)?;
    let path = e
        .health_check_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_PATH);
    let url = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    let invalid = |reason: &str| PlanError::Invalid {
        url: url.clone(),
        reason: reason.to_string(),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid("the scheme must be http or https")),
    };
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = https.then(|| TlsPlan {
        server_name: e
            .tls
            .override_server_name
            .clone()
            .unwrap_or_else(|| host.to_string()),
        verify: if e.tls.insecure_skip_verify {
            Verify::Nothing("spec.tls.insecureSkipVerify is set".into())
        } else if let Some(secret) = &e.tls.ca_bundle_secret {
            Verify::Nothing(format!(
                "its CA is in Secret {secret} (spec.tls.caBundleSecretRef), which klutch-health does not read"
            ))
        } else {
            Verify::HostRoots
        },
    });
    Ok(Plan {
        host: host.to_string(),
        port,
        authority: authority.as_str().to_string(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        url,
        tls,
    })
}

/// Why a broker did not answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("connection refused (is the broker running, and the Service in front of it?)")]
    Refused,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connection reset or closed before an answer: {0}")]
    Reset(String),
    #[error("no answer within {}: the broker hangs or is overloaded", human::duration(*.0))]
    TimedOut(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The handshake got as far as the certificate, which the ProviderConfig's TLS settings do not trust:
    /// the broker answers, but provider-anynines would refuse it too.
    #[error("its certificate is not trusted: {0}")]
    Untrusted(String),
    #[error("answered {0}")]
    ServerError(http::StatusCode),
}

/// The item of one answer: below 500 passes, an untrusted certificate warns, anything else fails.
pub fn verdict(
    target: &Target,
    plan: &Plan,
    answer: Result<http::StatusCode, ProbeError>,
    at: Timestamp,
) -> Observation {
    let who = match target.endpoint.service_type.as_deref() {
        Some("backupmanager") => "backup manager",
        _ => "broker",
    };
    let (status, message) = match answer {
        Ok(code) => {
            let mut m = format!("{who} answers: HEAD {} → {code}", plan.url);
            if let Some(TlsPlan {
                verify: Verify::Nothing(why),
                ..
            }) = &plan.tls
            {
                m.push_str(&format!("; certificate not verified: {why}"));
            }
            (Status::Pass, m)
        }
        Err(ProbeError::Untrusted(why)) => (
            Status::Warn,
            format!(
                "{who} answers TLS at {}, but its certificate is not trusted ({why}) with the ProviderConfig's \
TLS settings: provider-anynines refuses it too; give the ProviderConfig its CA (spec.tls.caBundleSecretRef) \
or fix the certificate",
                plan.url
            ),
        ),
        Err(e) => (Status::Fail, format!("HEAD {}: {e}", plan.url)),
    };
    Observation::new(&target.name, status, message, at)
}

/// Asks once: `HEAD`, no credentials, within `timeout` (connection and handshake included). Any status
/// below 500 is an answer.
pub async fn probe(
    plan: &Plan,
    tls: &TlsConfigs,
    timeout: Duration,
) -> Result<http::StatusCode, ProbeError> {
    tokio::time::timeout(timeout, ask(plan, tls))
        .await
        .unwrap_or(Err(ProbeError::TimedOut(timeout)))
}

async fn ask(plan: &Plan, tls: &TlsConfigs) -> Result<http::StatusCode, ProbeError> {
    let tcp = TcpStream::connect((plan.host.as_str(), plan.port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ProbeError::Refused,
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                ProbeError::Reset(e.to_string())
            }
            _ => ProbeError::Connect(e.to_string()),
        })?;
    let _ = tcp.set_nodelay(true);
    let Some(t) = &plan.tls else {
        return head(plan, tcp).await;
    };
    let name = ServerName::try_from(t.server_name.clone()).map_err(|e| {
        ProbeError::Tls(format!("{:?} is no valid server name: {e}", t.server_name))
    })?;
    let config = match t.verify {
        Verify::HostRoots => tls.verified.clone(),
        Verify::Nothing(_) => tls.unverified.clone(),
    };
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let untrusted = matches!(
                e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
                Some(rustls::Error::InvalidCertificate(_))
            );
            if untrusted {
                ProbeError::Untrusted(format!("{e}{}", tls.roots_note))
            } else {
                ProbeError::Tls(e.to_string())
            }
        })?;
    head(plan, stream).await
}

/// Stops a task when dropped: the connection of a probe that timed out must not outlive it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn head<S>(plan: &Plan, io: S) -> Result<http::StatusCode, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ProbeError::Reset(error_chain(&e)))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let request = http::Request::head(plan.path.as_str())
        .header(http::header::HOST, plan.authority.as_str())
        .header(
            http::header::USER_AGENT,
            concat!("klutch-health/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeError::Connect(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ProbeError::Reset(error_chain(&e)))?;
    match response.status() {
        s if s.is_server_error() => Err(ProbeError::ServerError(s)),
        s => Ok(s),
    }
}

/// The two TLS client configurations a probe uses: one that verifies against the host's CA certificates,
/// one that verifies nothing (but the handshake's own signatures).
pub struct TlsConfigs {
    verified: Arc<ClientConfig>,
    unverified: Arc<ClientConfig>,
    /// Added to an untrusted certificate's reason when the host has no CA certificate at all.
    roots_note: &'static str,
}

impl TlsConfigs {
    /// Verifying against the CA certificates of this host (`/etc/ssl/certs`, `SSL_CERT_FILE`).
    pub fn host() -> TlsConfigs {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "cannot read a CA certificate of this host: brokers it signed are not trusted");
        }
        roots.add_parsable_certificates(found.certs);
        TlsConfigs::with_roots(roots)
    }

    /// Verifying against `roots`.
    pub fn with_roots(roots: RootCertStore) -> TlsConfigs {
        let roots_note = if roots.is_empty() {
            "; this host has no CA certificates"
        } else {
            ""
        };
        // An explicit provider: kube links ring too, and no process-level default is installed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = rustls::DEFAULT_VERSIONS;
        let verified = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                    .with_no_client_auth()
            });
        match (verified, unverified) {
            (Ok(v), Ok(u)) => TlsConfigs {
                verified: Arc::new(v),
                unverified: Arc::new(u),
                roots_note,
            },
            // ring offers every default version: this cannot happen.
            (Err(e), _) | (_, Err(e)) => unreachable!("ring lacks a default TLS version: {e}"),
        }
    }
}

/// Accepts any certificate (the ProviderConfig says not to verify, or keeps its CA where this check does
/// not read), still checking that the handshake is signed by the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::checks::{testing, Settings};

    fn endpoint(url: &str) -> Endpoint {
        Endpoint {
            url: Some(url.into()),
            ..Endpoint::default()
        }
    }

    fn target(name: &str, e: Endpoint) -> Target {
        Target {
            name: name.into(),
            uid: None,
            endpoint: e,
        }
    }

    #[test]
    fn the_url_asked_is_spec_url_and_the_health_path_and_tls_settings_decide_what_is_verified() {
        let secret = Tls {
            ca_bundle_secret: Some("crossplane-system/broker-ca".into()),
            ..Tls::default()
        };
        /// A ProviderConfig's endpoint, the URL asked, and the server name checked and how, for TLS.
        type Row<'a> = (Endpoint, &'a str, Option<(&'a str, Verify)>);
        let table: &[Row<'_>] = &[
            (
                endpoint("http://broker.svc:3000"),
                "http://broker.svc:3000/instances",
                None,
            ),
            (
                Endpoint {
                    health_check_endpoint: Some("healthz".into()),
                    ..endpoint("http://broker.svc:3000/")
                },
                "http://broker.svc:3000/healthz",
                None,
            ),
            (
                Endpoint {
                    health_check_endpoint: Some("/v2/catalog".into()),
                    tls: secret.clone(),
                    ..endpoint("http://broker.svc/base/")
                },
                "http://broker.svc/base/v2/catalog",
                None,
            ),
            (
                endpoint("https://broker.example"),
                "https://broker.example/instances",
                Some(("broker.example", Verify::HostRoots)),
            ),
            (
                Endpoint {
                    tls: Tls {
                        override_server_name: Some("broker.internal".into()),
                        ..Tls::default()
                    },
                    ..endpoint("https://10.0.0.7:8443")
                },
                "https://10.0.0.7:8443/instances",
                Some(("broker.internal", Verify::HostRoots)),
            ),
            (
                Endpoint {
                    tls: Tls {
                        insecure_skip_verify: true,
                        ..Tls::default()
                    },
                    ..endpoint("https://broker.example")
                },
                "https://broker.example/instances",
                Some((
                    "broker.example",
                    Verify::Nothing("spec.tls.insecureSkipVerify is set".into()),
                )),
            ),
            (
                Endpoint {
                    tls: secret,
                    ..endpoint("https://broker.example")
                },
                "https://broker.example/instances",
                Some((
                    "broker.example",
                    Verify::Nothing("its CA is in Secret crossplane-system/broker-ca (spec.tls.caBundleSecretRef), which klutch-health does not read".into()),
                )),
            ),
        ];
        for (e, url, tls) in table {
            let p = plan(e).expect("a plan");
            assert_eq!(p.url, *url);
            assert_eq!(
                p.tls.map(|t| (t.server_name, t.verify)),
                tls.clone().map(|(n, v)| (n.to_string(), v)),
                "{url}"
            );
        }
        let p = plan(&endpoint("http://[::1]:3000")).expect("a plan");
        assert_eq!(
            (p.host.as_str(), p.port, p.path.as_str()),
            ("::1", 3000, "/instances")
        );
        assert_eq!(plan(&Endpoint::default()), Err(PlanError::NoUrl));
        for bad in ["broker.svc:3000", "ftp://broker", "http://"] {
            assert!(
                matches!(plan(&endpoint(bad)), Err(PlanError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn any_answer_below_500_passes_an_untrusted_certificate_warns_and_no_answer_fails() {
        let t = target("pg", endpoint("https://broker.example"));
        let unverified = Plan {
            tls: Some(TlsPlan {
                server_name: "broker.example".into(),
                verify: Verify::Nothing("spec.tls.insecureSkipVerify is set".into()),
            }),
            ..plan(&t.endpoint).expect("a plan")
        };
        let verified = plan(&t.endpoint).expect("a plan");
        let code = |c: u16| http::StatusCode::from_u16(c).expect("a status");
        let table = [
            (Ok(code(200)), Status::Pass),
            (Ok(code(401)), Status::Pass),
            (Ok(code(403)), Status::Pass),
            (Ok(code(404)), Status::Pass),
            (Err(ProbeError::ServerError(code(503))), Status::Fail),
            (Err(ProbeError::Refused), Status::Fail),
            (Err(ProbeError::Reset("closed".into())), Status::Fail),
            (
                Err(ProbeError::TimedOut(Duration::from_secs(2))),
                Status::Fail,
            ),
            (Err(ProbeError::Tls("alert".into())), Status::Fail),
            (
                Err(ProbeError::Untrusted("UnknownIssuer".into())),
                Status::Warn,
            ),
        ];
        for (answer, want) in table {
            let said = format!("{answer:?}");
            let o = verdict(&t, &verified, answer, Timestamp::UNIX_EPOCH);
            assert_eq!(
                (o.item.as_str(), o.status),
                ("pg", want),
                "{said}: {}",
                o.message
            );
        }
        let o = verdict(&t, &verified, Ok(code(401)), Timestamp::UNIX_EPOCH);
        assert_eq!(
            o.message,
            "broker answers: HEAD https://broker.example/instances → 401 Unauthorized"
        );
        let o = verdict(&t, &unverified, Ok(code(401)), Timestamp::UNIX_EPOCH);
        assert!(
            o.message
                .ends_with("; certificate not verified: spec.tls.insecureSkipVerify is set"),
            "{}",
            o.message
        );
        let o = verdict(
            &t,
            &verified,
            Err(ProbeError::ServerError(code(503))),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            o.message,
            "HEAD https://broker.example/instances: answered 503 Service Unavailable"
        );
        let backups = target(
            "backups",
            Endpoint {
                service_type: Some("backupmanager".into()),
                ..endpoint("http://backup-manager:3000")
            },
        );
        let o = verdict(
            &backups,
            &plan(&backups.endpoint).expect("a plan"),
            Ok(code(401)),
            Timestamp::UNIX_EPOCH,
        );
        assert!(
            o.message.starts_with("backup manager answers"),
            "{}",
            o.message
        );
    }

    #[test]
    fn only_the_endpoint_is_kept_of_a_provider_config_never_its_credentials() {
        let mut pc = testing::fixture("providerconfig-healthy");
        pc["spec"]["tls"] = serde_json::json!({
            "insecureSkipVerify": true,
            "overrideServerName": "broker.internal",
            "caBundleSecretRef": {"namespace": "crossplane-system", "name": "ca", "key": "ca.crt"}
        });
        let kept: BrokerConfig = serde_json::from_value(pc).expect("a ProviderConfig");
        assert_eq!(kept.target().name, "postgresql-service-broker");
        assert_eq!(
            kept.endpoint,
            Endpoint {
                url: Some("http://example-service-broker.example.svc:3000".into()),
                health_check_endpoint: Some("/instances".into()),
                service_type: Some("servicebroker".into()),
                tls: Tls {
                    insecure_skip_verify: true,
                    override_server_name: Some("broker.internal".into()),
                    ca_bundle_secret: Some("crossplane-system/ca".into()),
                },
            }
        );
        assert!(!format!("{kept:?}").contains("postgresql-service-broker-creds"));
    }

    /// How a fake broker answers.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Status(u16),
        /// Reads the request and never answers.
        Hang,
    }

    /// A broker on a loopback port of its own, over TLS when given an acceptor; it records each request's head.
    struct FakeBroker {
        port: u16,
        answer: Arc<Mutex<Answer>>,
        requests: Arc<Mutex<Vec<String>>>,
        server: Option<AbortOnDrop>,
    }

    impl FakeBroker {
        async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> FakeBroker {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
            let port = listener.local_addr().expect("an address").port();
            let answer = Arc::new(Mutex::new(Answer::Status(200)));
            let requests = Arc::new(Mutex::new(Vec::new()));
            let (a, r) = (answer.clone(), requests.clone());
            let server = tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let (a, r, tls) = (a.clone(), r.clone(), tls.clone());
                    tokio::spawn(async move {
                        match tls {
                            None => serve(tcp, a, r).await,
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(tcp).await {
                                    serve(stream, a, r).await
                                }
                            }
                        }
                    });
                }
            });
            FakeBroker {
                port,
                answer,
                requests,
                server: Some(AbortOnDrop(server)),
            }
        }

        fn answer(&self, answer: Answer) {
            *self.answer.lock().expect("not poisoned") = answer;
        }

        /// Stops listening: new connections are refused from when this returns.
        async fn stop(&mut self) {
            if let Some(mut server) = self.server.take() {
                server.0.abort();
                let _ = (&mut server.0).await;
            }
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        mut io: S,
        answer: Arc<Mutex<Answer>>,
        requests: Arc<Mutex<Vec<String>>>,
    ) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            // A TLS ClientHello at a plain HTTP server: it answers what such servers answer.
            if head.first() == Some(&0x16) {
                let _ = io.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                return;
            }
        }
        requests
            .lock()
            .expect("not poisoned")
            .push(String::from_utf8_lossy(&head).into_owned());
        let answer = *answer.lock().expect("not poisoned");
        match answer {
            Answer::Status(code) => {
                let response = format!(
                    "HTTP/1.1 {code} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = io.write_all(response.as_bytes()).await;
                let _ = io.shutdown().await;
            }
            Answer::Hang => std::future::pending().await,
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn ask_at(
        url: &str,
        tls: Tls,
        configs: &TlsConfigs,
    ) -> Result<http::StatusCode, ProbeError> {
        let e = Endpoint {
            tls,
            ..endpoint(url)
        };
        probe(&plan(&e).expect("a plan"), configs, TIMEOUT).await
    }

    #[tokio::test]
    async fn a_broker_answering_401_or_403_answers_503_does_not_and_a_stopped_one_is_refused() {
        let mut broker = FakeBroker::start(None).await;
        let url = format!("http://127.0.0.1:{}", broker.port);
        let configs = TlsConfigs::with_roots(RootCertStore::empty());
        for code in [200, 401, 403, 404] {
            broker.answer(Answer::Status(code));
            assert_eq!(
                ask_at(&url, Tls::default(), &configs)
                    .await
                    .map(|s| s.as_u16()),
                Ok(code)
            );
        }
        broker.answer(Answer::Status(503));
        assert_eq!(
            ask_at(&url, Tls::default(), &configs).await,
            Err(ProbeError::ServerError(
                http::StatusCode::SERVICE_UNAVAILABLE
            ))
        );
        let requests = broker.requests.lock().expect("not poisoned").clone();
        for r in &requests {
            assert!(r.starts_with("HEAD /instances HTTP/1.1\r\n"), "{r}");
            assert!(
                !r.to_ascii_lowercase().contains("authorization"),
                "no credentials: {r}"
            );
        }
        broker.stop().await;
        assert_eq!(
            ask_at(&url, Tls::default(), &configs).await,
            Err(ProbeError::Refused)
        );
    }

    #[tokio::test]
    async fn a_broker_that_hangs_times_out() {
        let broker = FakeBroker::start(None).await;
        broker.answer(Answer::Hang);
        let e = endpoint(&format!("http://127.0.0.1:{}", broker.port));
        let timeout = Duration::from_millis(200);
        let configs = TlsConfigs::with_roots(RootCertStore::empty());
        assert_eq!(
            probe(&plan(&e).expect("a plan"), &configs, timeout).await,
            Err(ProbeError::TimedOut(timeout))
        );
    }

    /// A CA and a leaf for 127.0.0.1 and localhost, as a broker behind TLS serves them.
    fn tls_broker_certs() -> (tokio_rustls::TlsAcceptor, RootCertStore) {
        let certs = klutch_sim::api::serving_certs().expect("certificates");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(certs.cert.as_bytes())
                .collect::<Result<_, _>>()
                .expect("a certificate");
        let key = PrivateKeyDer::from_pem_slice(certs.key.as_bytes()).expect("a key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a server config");
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(certs.ca_cert.as_bytes()) {
            roots.add(ca.expect("a CA")).expect("a root");
        }
        (tokio_rustls::TlsAcceptor::from(Arc::new(config)), roots)
    }

    #[tokio::test]
    async fn a_tls_broker_is_verified_as_its_provider_config_says() {
        let (acceptor, ca) = tls_broker_certs();
        let broker = FakeBroker::start(Some(acceptor)).await;
        broker.answer(Answer::Status(401));
        let url = format!("https://127.0.0.1:{}", broker.port);
        let trusting = TlsConfigs::with_roots(ca);
        let strangers = TlsConfigs::with_roots(RootCertStore::empty());
        let unauthorized = Ok(http::StatusCode::UNAUTHORIZED);

        assert_eq!(ask_at(&url, Tls::default(), &trusting).await, unauthorized);
        let untrusted = ask_at(&url, Tls::default(), &strangers).await;
        assert!(
            matches!(&untrusted, Err(ProbeError::Untrusted(why)) if why.contains("UnknownIssuer") && why.contains("no CA certificates")),
            "{untrusted:?}"
        );
        let wrong_name = Tls {
            override_server_name: Some("broker.elsewhere".into()),
            ..Tls::default()
        };
        let untrusted = ask_at(&url, wrong_name, &trusting).await;
        assert!(
            matches!(&untrusted, Err(ProbeError::Untrusted(why)) if why.contains("not valid for name")),
            "{untrusted:?}"
        );
        let skip = Tls {
            insecure_skip_verify: true,
            ..Tls::default()
        };
        assert_eq!(ask_at(&url, skip, &strangers).await, unauthorized);
        let in_secret = Tls {
            ca_bundle_secret: Some("crossplane-system/broker-ca".into()),
            ..Tls::default()
        };
        assert_eq!(ask_at(&url, in_secret, &strangers).await, unauthorized);

        // A TLS URL at a broker that speaks plain HTTP: a handshake failure other than trust.
        let plain = FakeBroker::start(None).await;
        let failed = ask_at(
            &format!("https://127.0.0.1:{}", plain.port),
            Tls {
                insecure_skip_verify: true,
                ..Tls::default()
            },
            &strangers,
        )
        .await;
        assert!(matches!(failed, Err(ProbeError::Tls(_))), "{failed:?}");
    }

    /// The API server lists one ProviderConfig whose broker is `port`, and watches on silently.
    fn api_listing_broker_at(port: u16) -> kube::Client {
        testing::fake_api(move |path, watching| {
            if !path.ends_with("/providerconfigs") {
                return Some((404, "{}".into()));
            }
            if watching {
                return None;
            }
            let mut pc = testing::fixture("providerconfig-healthy");
            pc["spec"]["url"] = format!("http://127.0.0.1:{port}").into();
            let list = serde_json::json!({
                "apiVersion": "dataservices.anynines.com/v1",
                "kind": "ProviderConfigList",
                "metadata": {"resourceVersion": "7"},
                "items": [pc],
            });
            Some((200, list.to_string()))
        })
    }

    /// Waits (at most 10 s) until the item `item` of the check `brokers` has `status` and a message that
    /// contains `words`; its message then.
    async fn until(sink: &Sink, item: &str, status: Status, words: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let snapshot = sink.snapshot();
            let found = snapshot
                .checks
                .get("brokers")
                .and_then(|items| items.iter().find(|o| o.item == item).cloned());
            if let Some(o) = found.filter(|o| o.status == status && o.message.contains(words)) {
                assert!(!snapshot.unsynced.iter().any(|u| u.starts_with("brokers")));
                return o.message;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{item} never turned {status:?} with {words:?}: {:?}",
                snapshot.checks.get("brokers")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_check_asks_each_listed_broker_every_interval_and_says_when_it_stops_answering() {
        let mut broker = FakeBroker::start(None).await;
        broker.answer(Answer::Status(401));
        let check = Broker {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            ..Broker::default()
        };
        let (sink, _, tasks) =
            testing::started(&check, "brokers", api_listing_broker_at(broker.port));
        let name = "postgresql-service-broker";
        let said = until(&sink, name, Status::Pass, "401 Unauthorized").await;
        assert!(
            said.starts_with("broker answers: HEAD http://127.0.0.1:"),
            "{said}"
        );
        broker.answer(Answer::Status(503));
        until(
            &sink,
            name,
            Status::Fail,
            "answered 503 Service Unavailable",
        )
        .await;
        broker.answer(Answer::Hang);
        until(&sink, name, Status::Fail, "no answer within 500ms").await;
        broker.answer(Answer::Status(403));
        until(&sink, name, Status::Pass, "403 Forbidden").await;
        broker.stop().await;
        until(&sink, name, Status::Fail, "connection refused").await;
        assert_eq!(
            Settings::targets(&check)
                .iter()
                .map(|t| (t.group.as_str(), t.resource.as_str()))
                .collect::<Vec<_>>(),
            [("dataservices.anynines.com", "providerconfigs")]
        );
        tasks.stop();
    }
}
