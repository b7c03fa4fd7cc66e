//! Configuration: `config.toml`, then `KLUTCH_HEALTH_…` environment variables, then command-line flags.
//!
//! Loading happens in two steps so that every error names the key an operator has to fix: figment merges the
//! sources into one tree, then each part is deserialized with `serde_path_to_error`, and each `[[check]]` on
//! its own, so a bad value reads `check "backend-status": timeout: invalid duration "abc"`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::policy::Patterns;

/// Environment variables with this prefix override configuration keys (`__` separates nested keys).
pub const ENV_PREFIX: &str = "KLUTCH_HEALTH_";
/// Environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "KLUTCH_HEALTH_CONFIG";

/// Why a configuration cannot be used. The message names the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The whole validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: Server,
    pub kubernetes: Cluster,
    pub clusters: BTreeMap<String, Cluster>,
    #[serde(rename = "check")]
    pub checks: Vec<Check>,
    pub endpoints: Endpoints,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: SocketAddr,
    pub details: Details,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(with = "duration")]
    pub shutdown_delay: Duration,
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    #[serde(deserialize_with = "text::deserialize")]
    pub service_id: String,
    #[serde(deserialize_with = "text::deserialize")]
    pub description: String,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            details: Details::Always,
            token_file: None,
            shutdown_delay: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            max_connections: 1024,
            service_id: "klutch-health".into(),
            description: "Klutch control plane".into(),
        }
    }
}

/// Who may read failure messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Details {
    Always,
    Never,
    Token,
}

/// How to reach one Kubernetes cluster. `[kubernetes]` is the default cluster; `[clusters.NAME]` the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::option"
    )]
    pub context: Option<String>,
    #[serde(with = "duration")]
    pub stale_after: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            kubeconfig: None,
            context: None,
            stale_after: Duration::from_secs(60),
        }
    }
}

/// One configured check: the common keys, then what its type needs.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub require: Require,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(flatten)]
    pub kind: CheckKind,
}

impl Check {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            CheckKind::BackendStatus(_) => "backend-status",
            CheckKind::CrossplaneProvider(_) => "crossplane-provider",
            CheckKind::ProviderConfig(_) => "provider-config",
            CheckKind::Deployment(_) => "deployment",
            CheckKind::Pods(_) => "pods",
        }
    }
}

/// The keys that every check type shares, split off before the type-specific keys are read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: String,
    #[serde(default)]
    require: Require,
    #[serde(default)]
    cluster: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CheckKind {
    BackendStatus(BackendStatus),
    CrossplaneProvider(CrossplaneProvider),
    ProviderConfig(ProviderConfig),
    Deployment(Deployment),
    Pods(Pods),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendStatus {
    #[serde(with = "http_url")]
    pub url: hyper::Uri,
    #[serde(with = "duration", default = "BackendStatus::default_interval")]
    pub interval: Duration,
    #[serde(with = "duration", default = "BackendStatus::default_timeout")]
    pub timeout: Duration,
    #[serde(default = "BackendStatus::default_max_body")]
    pub max_body: usize,
}

impl BackendStatus {
    fn default_interval() -> Duration {
        Duration::from_secs(10)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_max_body() -> usize {
        1024 * 1024
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossplaneProvider {
    /// Providers that must exist and be healthy; `None` checks every installed provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub group: String,
    pub version: String,
    pub plural: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    #[serde(with = "duration")]
    pub check_stale_after: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            group: "dataservices.anynines.com".into(),
            version: "v1".into(),
            plural: "providerconfigs".into(),
            names: None,
            check_stale_after: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub namespace: String,
    pub deployment: String,
    #[serde(default = "Deployment::default_min_available")]
    pub min_available: i32,
}

impl Deployment {
    fn default_min_available() -> i32 {
        1
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pods {
    pub namespace: String,
    pub selector: String,
    #[serde(with = "duration")]
    pub restart_window: Duration,
}

impl Default for Pods {
    fn default() -> Self {
        Pods {
            namespace: "crossplane-system".into(),
            selector: "pkg.crossplane.io/provider=provider-anynines".into(),
            restart_window: Duration::from_secs(600),
        }
    }
}

/// How many of a check's items must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Require {
    #[default]
    All,
    Any,
    AtLeast(usize),
}

impl Serialize for Require {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Require::All => s.serialize_str("all"),
            Require::Any => s.serialize_str("any"),
            Require::AtLeast(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Require {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Number(i64),
        }
        let bad =
            || serde::de::Error::custom("expected \"all\", \"any\" or a number of at least 1");
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::Word(w) if w == "all" => Ok(Require::All),
            Raw::Word(w) if w == "any" => Ok(Require::Any),
            Raw::Word(w) => w
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .map(Require::AtLeast)
                .ok_or_else(bad),
            Raw::Number(n) if n >= 1 => Ok(Require::AtLeast(n as usize)),
            Raw::Number(_) => Err(bad()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    pub healthz: Policy,
    pub readyz: Policy,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            healthz: Policy::with_unknown(UnknownAs::Warn),
            readyz: Policy::with_unknown(UnknownAs::Fail),
        }
    }
}

impl<'de> Deserialize<'de> for Endpoints {
    /// Keys left out take that endpoint's defaults (`unknown` is `warn` for healthz, `fail` for readyz).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            healthz: PolicyKeys,
            #[serde(default)]
            readyz: PolicyKeys,
        }
        let raw = Raw::deserialize(d)?;
        let defaults = Endpoints::default();
        Ok(Endpoints {
            healthz: raw.healthz.over(defaults.healthz),
            readyz: raw.readyz.over(defaults.readyz),
        })
    }
}

/// One endpoint's pass/fail policy.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub warn_only: Vec<String>,
    #[serde(with = "duration")]
    pub fail_after: Duration,
    #[serde(with = "duration")]
    pub pass_after: Duration,
    pub unknown: UnknownAs,
}

impl Policy {
    fn with_unknown(unknown: UnknownAs) -> Self {
        Policy {
            include: vec!["*".into()],
            exclude: vec![],
            warn_only: vec![],
            fail_after: Duration::ZERO,
            pass_after: Duration::ZERO,
            unknown,
        }
    }
}

/// The keys of `[endpoints.NAME]` as written: every one optional.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyKeys {
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    warn_only: Option<Vec<String>>,
    #[serde(default, with = "duration::option")]
    fail_after: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pass_after: Option<Duration>,
    unknown: Option<UnknownAs>,
}

impl PolicyKeys {
    fn over(self, d: Policy) -> Policy {
        Policy {
            include: self.include.unwrap_or(d.include),
            exclude: self.exclude.unwrap_or(d.exclude),
            warn_only: self.warn_only.unwrap_or(d.warn_only),
            fail_after: self.fail_after.unwrap_or(d.fail_after),
            pass_after: self.pass_after.unwrap_or(d.pass_after),
            unknown: self.unknown.unwrap_or(d.unknown),
        }
    }
}

/// How an `unknown` item counts for an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownAs {
    Fail,
    Warn,
    Pass,
}

/// Flags that override the file and the environment.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// Where the configuration file is: `--config`, else `$KLUTCH_HEALTH_CONFIG`, else `./config.toml`.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV_CONFIG).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config.toml"))
}

impl Config {
    /// Reads the file, the environment and the flags, and validates the result.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(err(format!(
                "cannot read configuration file {}: no such file (pass --config PATH or set {ENV_CONFIG})",
                path.display()
            )));
        }
        let mut figment = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]));
        if let Some(listen) = overrides.listen {
            figment = figment.merge(Serialized::default("server.listen", listen.to_string()));
        }
        let tree: Dict = figment.extract().map_err(|e| err(figment_message(e)))?;
        Self::from_dict(tree)
    }

    /// Parses a TOML document (no environment, no flags): for tests and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let tree: Dict = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| err(figment_message(e)))?;
        Self::from_dict(tree)
    }

    fn from_dict(mut tree: Dict) -> Result<Config, ConfigError> {
        let checks = match tree.remove("check") {
            None => vec![],
            Some(Value::Array(_, items)) => items,
            Some(_) => return Err(err("check: expected an array of tables ([[check]])")),
        };
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rest {
            #[serde(default)]
            server: Server,
            #[serde(default)]
            kubernetes: Cluster,
            #[serde(default)]
            clusters: BTreeMap<String, Cluster>,
            #[serde(default)]
            endpoints: Endpoints,
        }
        let rest: Rest = deserialize(Value::from(tree)).map_err(err)?;
        let checks = checks
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_check(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        let config = Config {
            server: rest.server,
            kubernetes: rest.kubernetes,
            clusters: rest.clusters,
            checks,
            endpoints: rest.endpoints,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.checks.is_empty() {
            return Err(err(
                "check: no checks configured (add at least one [[check]])",
            ));
        }
        let mut names = BTreeSet::new();
        for check in &self.checks {
            let at = |msg: String| err(format!("check \"{}\": {msg}", check.name));
            if check.name.is_empty()
                || check.name.contains('/')
                || check.name.contains(char::is_whitespace)
            {
                return Err(at("name: must be non-empty, without \"/\" or spaces".into()));
            }
            if !names.insert(check.name.as_str()) {
                return Err(at(
                    "name: duplicate check name (every check needs its own name)".into(),
                ));
            }
            match (&check.kind, &check.cluster) {
                (CheckKind::BackendStatus(_), Some(_)) => {
                    return Err(at(
                        "cluster: a backend-status check polls a URL, not a cluster".into(),
                    ))
                }
                (_, Some(c)) if !self.clusters.contains_key(c) => {
                    return Err(at(format!(
                        "cluster: no cluster \"{c}\" is declared under [clusters.{c}]"
                    )))
                }
                _ => {}
            }
            match &check.kind {
                CheckKind::BackendStatus(b) => {
                    if b.interval.is_zero() {
                        return Err(at("interval: must be more than 0s".into()));
                    }
                    if b.timeout.is_zero() {
                        return Err(at("timeout: must be more than 0s".into()));
                    }
                    if b.max_body == 0 {
                        return Err(at("max_body: must be at least 1 byte".into()));
                    }
                }
                CheckKind::Deployment(d) => {
                    if d.namespace.is_empty() || d.deployment.is_empty() {
                        return Err(at("namespace and deployment: must not be empty".into()));
                    }
                    if d.min_available < 0 {
                        return Err(at("min_available: must not be negative".into()));
                    }
                }
                CheckKind::Pods(p) if p.namespace.is_empty() => {
                    return Err(at("namespace: must not be empty".into()));
                }
                _ => {}
            }
        }
        for (name, cluster) in &self.clusters {
            if cluster.kubeconfig.is_none() {
                return Err(err(format!("clusters.{name}.kubeconfig: missing (an extra cluster needs its kubeconfig path)")));
            }
        }
        let check_names: Vec<&str> = self.checks.iter().map(|c| c.name.as_str()).collect();
        for (endpoint, policy) in [
            ("healthz", &self.endpoints.healthz),
            ("readyz", &self.endpoints.readyz),
        ] {
            for (key, patterns) in [
                ("include", &policy.include),
                ("exclude", &policy.exclude),
                ("warn_only", &policy.warn_only),
            ] {
                Patterns::validated(patterns, &check_names)
                    .map_err(|e| err(format!("endpoints.{endpoint}.{key}: {e}")))?;
            }
        }
        if self.server.details == Details::Token {
            self.token()?;
        }
        Ok(())
    }

    /// The bearer token that unlocks details, read from `server.token_file`.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if self.server.details != Details::Token {
            return Ok(None);
        }
        let path = self.server.token_file.as_ref().ok_or_else(|| {
            err("server.token_file: missing (details = \"token\" needs a token file)")
        })?;
        let token = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "server.token_file: cannot read {}: {e}",
                path.display()
            ))
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(err(format!(
                "server.token_file: {} is empty",
                path.display()
            )));
        }
        Ok(Some(token.to_string()))
    }

    /// The effective configuration as TOML, for `--check-config`. Holds no secret: the token stays in its file.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    pub fn cluster(&self, name: Option<&str>) -> Option<&Cluster> {
        match name {
            None => Some(&self.kubernetes),
            Some(n) => self.clusters.get(n),
        }
    }
}

fn parse_check(index: usize, value: Value) -> Result<Check, ConfigError> {
    let Value::Dict(_, mut dict) = value else {
        return Err(err(format!(
            "check #{}: expected a table ([[check]])",
            index + 1
        )));
    };
    let label = match dict.get("name") {
        Some(Value::String(_, n)) => format!("check \"{n}\""),
        _ => format!("check #{}", index + 1),
    };
    let at = |msg: String| err(format!("{label}: {msg}"));
    let type_name = match dict.remove("type") {
        Some(Value::String(_, t)) => t,
        Some(_) => return Err(at("type: expected a string".into())),
        None => {
            return Err(at(
                "type: missing (one of backend-status, crossplane-provider, provider-config, deployment, pods)".into(),
            ))
        }
    };
    let mut common = Dict::new();
    for key in ["name", "require", "cluster"] {
        if let Some(v) = dict.remove(key) {
            common.insert(key.into(), v);
        }
    }
    let common: Common = deserialize(Value::from(common)).map_err(at)?;
    // Each type's keys are read by its own struct (not a tagged enum, which would hide the key's path).
    let rest = Value::from(dict);
    let kind = match type_name.as_str() {
        "backend-status" => deserialize(rest).map(CheckKind::BackendStatus),
        "crossplane-provider" => deserialize(rest).map(CheckKind::CrossplaneProvider),
        "provider-config" => deserialize(rest).map(CheckKind::ProviderConfig),
        "deployment" => deserialize(rest).map(CheckKind::Deployment),
        "pods" => deserialize(rest).map(CheckKind::Pods),
        other => Err(format!(
            "type: unknown check type \"{other}\" (one of backend-status, crossplane-provider, provider-config, deployment, pods)"
        )),
    }
    .map_err(at)?;
    Ok(Check {
        name: common.name,
        require: common.require,
        cluster: common.cluster,
        kind,
    })
}

/// Deserializes a figment tree, reporting errors as `path.to.key: what is wrong`.
fn deserialize<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let inner = inner.kind.to_string();
        if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

fn figment_message(e: figment::Error) -> String {
    let path = e.path.join(".");
    let source = match &e.metadata {
        Some(md) => md
            .source
            .as_ref()
            .map(|s| format!(" (from {s})"))
            .unwrap_or_default(),
        None => String::new(),
    };
    if path.is_empty() {
        format!("{}{source}", e.kind)
    } else {
        format!("{path}: {}{source}", e.kind)
    }
}

/// Durations written like `10s`, `2m`, `1h30m`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Text(t)) => humantime::parse_duration(t.trim()).map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid duration \"{t}\" (write it like 500ms, 10s, 2m or 1h30m)"
                ))
            }),
            Ok(Raw::Number(0)) => Ok(Duration::ZERO),
            _ => Err(serde::de::Error::custom(
                "invalid duration: expected a string like \"10s\" or \"2m\" (a unit is required)",
            )),
        }
    }

    /// For keys that may be left out.
    pub mod option {
        use std::time::Duration;

        use serde::Deserializer;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// Text keys that the environment can set. Environment values have no type, and figment reads
/// `KLUTCH_HEALTH_SERVER__SERVICE_ID=2024` as a number and `…DESCRIPTION=true` as a boolean: both are text here.
mod text {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match Raw::deserialize(d) {
            Ok(Raw::Text(t)) => Ok(t),
            Ok(Raw::Unsigned(n)) => Ok(n.to_string()),
            Ok(Raw::Signed(n)) => Ok(n.to_string()),
            Ok(Raw::Float(n)) => Ok(n.to_string()),
            Ok(Raw::Bool(b)) => Ok(b.to_string()),
            Err(_) => Err(serde::de::Error::custom("invalid type: expected a string")),
        }
    }

    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        deserialize(d).map(Some)
    }
}

/// `http://` URLs, checked when the configuration is read rather than at the first poll.
mod http_url {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(u: &hyper::Uri, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&u.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<hyper::Uri, D::Error> {
        let text = String::deserialize(d)?;
        let bad = |why: &str| serde::de::Error::custom(format!("invalid URL \"{text}\": {why}"));
        let uri: hyper::Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "only http:// is supported (provider-anynines serves plain HTTP)",
                ))
            }
            _ => return Err(bad("expected http://HOST:PORT/PATH")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("missing host"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            // Not echoed, unlike other bad URLs: this one holds a secret.
            return Err(serde::de::Error::custom(
                "invalid URL: credentials in the URL are not supported (they would be logged, and never sent)",
            ));
        }
        Ok(uri)
    }
}
