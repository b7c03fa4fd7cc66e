//! Configuration: `config.toml`, then `KLUTCH_HEALTH_…` environment variables, then command-line flags.
//!
//! Loading happens in two steps so that every error names the key an operator has to fix: figment merges the
//! sources into one tree, then each part is deserialized with `serde_path_to_error`, and each `[[check]]` on
//! its own: the keys every check shares here, its type's keys by that type's settings struct through
//! [`crate::checks`], so a bad value reads `check "backend-status": timeout: invalid duration "abc"`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::checks::backend_status::BackendStatus;
use crate::checks::packages::CrossplanePackage;
use crate::checks::CheckRef;
use crate::checks::{type_names, Registration, Settings};
use crate::kubernetes::settings::Clusters;
use crate::values::{deserialize, duration, text, KeyError};
use crate::verdict::report::ItemName;

mod endpoints;
mod operating;

pub use crate::kubernetes::settings::Cluster;
pub use endpoints::{EndpointPolicy, Endpoints, PatternError, Patterns, UnknownAs};
pub use operating::{Maintenance, Silence};

/// Environment variables with this prefix override configuration keys (`__` separates nested keys).
pub const ENV_PREFIX: &str = "KLUTCH_HEALTH_";
/// Environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "KLUTCH_HEALTH_CONFIG";

/// Why a configuration cannot be used. Every message names the key an operator has to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: cannot read configuration file {}: no such file (pass --config PATH or set {ENV_CONFIG})", .0.display())]
    NoFile(PathBuf),
    /// The file or the environment cannot be read or merged.
    #[error("invalid configuration: {}", figment_message(.0))]
    Source(#[source] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Key(#[from] KeyError),
    /// `check "NAME"`, or `check #N` before its name is known.
    #[error("invalid configuration: {check}: {source}")]
    Check {
        check: String,
        #[source]
        source: KeyError,
    },
    #[error("invalid configuration: endpoints.{endpoint}.{key}: {source}")]
    Pattern {
        endpoint: &'static str,
        key: &'static str,
        #[source]
        source: PatternError,
    },
    #[error("invalid configuration: server.token_file: cannot read {}: {source}", .path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A reason written as nothing but blanks: one is required, so that a silenced failure or a drained control
/// plane always says why.
const BLANK_REASON: &str = "must say why (it is blank)";

/// The characters a check name may have, besides ASCII letters and digits: it is a URL path segment
/// (`/readyz/NAME`), part of every item name (`NAME/ITEM`), a glob pattern's literal and a metric label, and
/// none of these may need escaping.
pub const CHECK_NAME_PUNCTUATION: [char; 3] = ['-', '_', '.'];
/// The longest check name.
pub const CHECK_NAME_MAX: usize = 63;
/// Check names the service gives items of its own ([`crate::reserved::CHECKS`]).
pub const RESERVED_CHECK_NAMES: [&str; 2] = crate::reserved::CHECKS;

/// Whether `name` can be a check's name; if not, why.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || CHECK_NAME_PUNCTUATION.contains(&c);
    let rule = format!(
        "a check name is 1 to {CHECK_NAME_MAX} ASCII letters, digits, '-', '_' and '.', starting with a letter or a digit (it is a URL path segment, /readyz/NAME, and a metric label)"
    );
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!("{name:?} has {bad:?}: {rule}"));
    }
    if name.is_empty()
        || name.len() > CHECK_NAME_MAX
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!("{name:?}: {rule}"));
    }
    if RESERVED_CHECK_NAMES.contains(&name) {
        return Err(format!(
            "{name:?} is reserved: klutch-health names items of its own so (choose another name)"
        ));
    }
    Ok(())
}

fn key(path: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Key(KeyError::new(path, why))
}

fn source(e: figment::Error) -> ConfigError {
    ConfigError::Source(Box::new(e))
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
    #[serde(rename = "silence", skip_serializing_if = "Vec::is_empty")]
    pub silences: Vec<Silence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: SocketAddr,
    pub details: DetailsPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(with = "duration")]
    pub shutdown_delay: Duration,
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// The listener for anyone (Ingress, load balancers, uptime monitors): health paths only, reasons withheld.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_listen: Option<SocketAddr>,
    /// The public listener's own limit, so that a public flood never takes kubelet's slots.
    pub public_max_connections: usize,
    #[serde(deserialize_with = "text::deserialize")]
    pub service_id: String,
    #[serde(deserialize_with = "text::deserialize")]
    pub description: String,
    /// The `backend-status` check whose poll `/backend-health` serves; `None`: the first one configured.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::option"
    )]
    pub passthrough: Option<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            details: DetailsPolicy::Always,
            token_file: None,
            shutdown_delay: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            max_connections: 1024,
            public_listen: None,
            public_max_connections: 256,
            service_id: "klutch-health".into(),
            description: "Klutch control plane".into(),
            passthrough: None,
        }
    }
}

impl Server {
    /// Values that cannot work: a listener that closes every request before it arrives, or admits none.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.header_read_timeout.is_zero() {
            return Err(key(
                "server.header_read_timeout",
                "must be more than 0s: every connection would be closed before its request is read",
            ));
        }
        for (name, limit) in [
            ("server.max_connections", self.max_connections),
            ("server.public_max_connections", self.public_max_connections),
        ] {
            if limit == 0 {
                return Err(key(
                    name,
                    "must be at least 1: the listener could admit no connection",
                ));
            }
        }
        Ok(())
    }
}

/// Who may read failure messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetailsPolicy {
    Always,
    Never,
    Token,
}

/// One configured check: the keys every type shares, and its type's own settings (read by the registry).
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub require: Require,
    pub cluster: Option<String>,
    /// The `crossplane-package` item whose runtime this check watches (`package =
    /// "providers/provider-anynines"`): the links between checks read it.
    pub package: Option<ItemName>,
    pub settings: Arc<dyn Settings>,
}

impl Check {
    pub(crate) fn type_name(&self) -> &'static str {
        self.settings.type_name()
    }

    /// What the signals need of it.
    pub(crate) fn as_ref(&self) -> CheckRef<'_> {
        CheckRef {
            name: &self.name,
            cluster: self.cluster.as_deref(),
            settings: &*self.settings,
        }
    }
}

impl Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            name: &'a str,
            require: Require,
            #[serde(skip_serializing_if = "Option::is_none")]
            cluster: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            package: Option<&'a str>,
            #[serde(rename = "type")]
            type_name: &'static str,
            #[serde(flatten)]
            settings: serde_json::Value,
        }
        Out {
            name: &self.name,
            require: self.require,
            cluster: self.cluster.as_deref(),
            package: self.package.as_deref(),
            type_name: self.type_name(),
            settings: self.settings.to_json(),
        }
        .serialize(s)
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
    #[serde(default)]
    package: Option<String>,
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
            return Err(ConfigError::NoFile(path.to_path_buf()));
        }
        let mut figment = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]));
        if let Some(listen) = overrides.listen {
            figment = figment.merge(Serialized::default("server.listen", listen.to_string()));
        }
        let tree: Dict = figment.extract().map_err(source)?;
        Self::from_dict(tree)
    }

    /// Parses a TOML document (no environment, no flags): for tests and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let tree: Dict = Figment::from(Toml::string(text))
            .extract()
            .map_err(source)?;
        Self::from_dict(tree)
    }

    fn from_dict(mut tree: Dict) -> Result<Config, ConfigError> {
        let checks = match tree.remove("check") {
            None => vec![],
            Some(Value::Array(_, items)) => items,
            Some(_) => return Err(key("check", "expected an array of tables ([[check]])")),
        };
        Endpoints::fill_defaults(&mut tree);
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
            #[serde(default)]
            silence: Vec<Silence>,
            #[serde(default)]
            maintenance: Option<Maintenance>,
        }
        let rest: Rest = deserialize(&Value::from(tree))?;
        if let Some(name) = rest.clusters.iter().find_map(|(n, c)| c.events.map(|_| n)) {
            return Err(key(
                &format!("clusters.{name}.events"),
                "Events are written to the default cluster only: set [kubernetes] events instead",
            ));
        }
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
            silences: rest.silence,
            maintenance: rest.maintenance,
        };
        config.validate()?;
        let check_names: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
        operating::warn_unmatched(&config.silences, &check_names);
        operating::warn_ended(
            &config.silences,
            config.maintenance.as_ref(),
            jiff::Timestamp::now(),
        );
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.checks.is_empty() {
            return Err(key(
                "check",
                "no checks configured (add at least one [[check]])",
            ));
        }
        let mut names = BTreeSet::new();
        for check in &self.checks {
            let at = |source: KeyError| ConfigError::Check {
                check: format!("check \"{}\"", check.name),
                source,
            };
            check_name(&check.name).map_err(|why| at(KeyError::new("name", why)))?;
            if !names.insert(check.name.as_str()) {
                return Err(at(KeyError::new(
                    "name",
                    "duplicate check name (every check needs its own name)",
                )));
            }
            match &check.cluster {
                Some(c)
                    if !check.settings.targets().is_empty() && !self.clusters.contains_key(c) =>
                {
                    return Err(at(KeyError::new(
                        "cluster",
                        format!("no cluster \"{c}\" is declared under [clusters.{c}]"),
                    )))
                }
                _ => {}
            }
            check
                .settings
                .validate(check.cluster.as_deref())
                .map_err(at)?;
            if let Some(package) = &check.package {
                validate_package(package, &self.checks).map_err(at)?;
            }
        }
        for (prefix, cluster) in std::iter::once(("kubernetes".to_string(), &self.kubernetes))
            .chain(
                self.clusters
                    .iter()
                    .map(|(n, c)| (format!("clusters.{n}"), c)),
            )
        {
            cluster
                .validate()
                .map_err(|e| key(&format!("{prefix}.{}", e.path), e.why))?;
        }
        for (name, cluster) in &self.clusters {
            if cluster.kubeconfig.is_none() {
                return Err(key(
                    &format!("clusters.{name}.kubeconfig"),
                    "missing (an extra cluster needs its kubeconfig path)",
                ));
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
                patterns
                    .reach(&check_names)
                    .map_err(|source| ConfigError::Pattern {
                        endpoint,
                        key,
                        source,
                    })?;
            }
        }
        if let Some(name) = &self.server.passthrough {
            if !self
                .checks
                .iter()
                .any(|c| &c.name == name && c.settings.downcast::<BackendStatus>().is_some())
            {
                return Err(key(
                    "server.passthrough",
                    format!("no backend-status check is named {name:?} (it names the check whose poll /backend-health serves)"),
                ));
            }
        }
        if let Some(m) = &self.maintenance {
            if m.from.is_some_and(|from| from >= m.until) {
                return Err(key(
                    "maintenance.until",
                    format!("{} is not after maintenance.from", m.until),
                ));
            }
            if m.reason.trim().is_empty() {
                return Err(key("maintenance.reason", BLANK_REASON));
            }
        }
        for (i, silence) in self.silences.iter().enumerate() {
            if silence.reason.trim().is_empty() {
                return Err(key(&format!("silence[{i}].reason"), BLANK_REASON));
            }
        }
        self.server.validate()?;
        if self.server.details == DetailsPolicy::Token {
            self.token()?;
        }
        Ok(())
    }

    /// The `backend-status` check whose poll `/backend-health` serves: the one `server.passthrough` names, else
    /// the first one configured.
    pub fn passthrough(&self) -> Option<&str> {
        self.server.passthrough.as_deref().or_else(|| {
            self.checks
                .iter()
                .find(|c| c.settings.downcast::<BackendStatus>().is_some())
                .map(|c| c.name.as_str())
        })
    }

    /// The bearer token that unlocks details, read from `server.token_file`.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if self.server.details != DetailsPolicy::Token {
            return Ok(None);
        }
        let path = self.server.token_file.as_ref().ok_or_else(|| {
            key(
                "server.token_file",
                "missing (details = \"token\" needs a token file)",
            )
        })?;
        let token = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
            path: path.clone(),
            source,
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(key(
                "server.token_file",
                format!("{} is empty", path.display()),
            ));
        }
        Ok(Some(token.to_string()))
    }

    /// The effective configuration as TOML, for `--check-config`. Holds no secret: the token stays in its file.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// The default cluster and the named ones, for the signals.
    pub(crate) fn clusters(&self) -> Clusters<'_> {
        Clusters {
            default: &self.kubernetes,
            named: &self.clusters,
        }
    }
}

fn parse_check(index: usize, value: Value) -> Result<Check, ConfigError> {
    let Value::Dict(_, mut dict) = value else {
        return Err(ConfigError::Check {
            check: format!("check #{}", index + 1),
            source: KeyError::new("", "expected a table ([[check]])"),
        });
    };
    let label = match dict.get("name") {
        Some(Value::String(_, n)) => format!("check \"{n}\""),
        _ => format!("check #{}", index + 1),
    };
    let at = |source: KeyError| ConfigError::Check {
        check: label.clone(),
        source,
    };
    let type_name = match dict.remove("type") {
        Some(Value::String(_, t)) => t,
        Some(_) => return Err(at(KeyError::new("type", "expected a string"))),
        None => {
            return Err(at(KeyError::new(
                "type",
                format!("missing (one of {})", type_names()),
            )))
        }
    };
    let mut common = Dict::new();
    for key in ["name", "require", "cluster", "package"] {
        if let Some(v) = dict.remove(key) {
            common.insert(key.into(), v);
        }
    }
    let common: Common = deserialize(&Value::from(common)).map_err(at)?;
    let registration = Registration::find(&type_name).ok_or_else(|| {
        at(KeyError::new(
            "type",
            format!(
                "unknown check type \"{type_name}\" (one of {})",
                type_names()
            ),
        ))
    })?;
    let settings = registration.read(&Value::from(dict)).map_err(at)?;
    let package = common
        .package
        .map(|p| package_item(&p, &*settings))
        .transpose()
        .map_err(at)?;
    Ok(Check {
        name: common.name,
        require: common.require,
        cluster: common.cluster,
        package,
        settings,
    })
}

/// `package = "CHECK/ITEM"` of a check whose type may name its package; whether that check exists is
/// validated once every check is read.
fn package_item(text: &str, settings: &dyn Settings) -> Result<ItemName, KeyError> {
    if !crate::verdict::links::takes_package(settings.type_name()) {
        return Err(KeyError::new(
            "package",
            format!(
                "a {} check names no package (only {} checks do)",
                settings.type_name(),
                crate::verdict::links::taking_package()
            ),
        ));
    }
    match text.split_once('/') {
        Some((check, item)) if !check.is_empty() && !item.is_empty() && !item.contains('/') => {
            Ok(ItemName::new(check, item))
        }
        _ => Err(KeyError::new(
            "package",
            format!(
                "{text:?} is not CHECK/ITEM: name an item of a crossplane-package check, like \"providers/provider-anynines\""
            ),
        )),
    }
}

/// The check a `package` key names must be a `crossplane-package` check that may have that item.
fn validate_package(package: &ItemName, checks: &[Check]) -> Result<(), KeyError> {
    let wrong = |why: String| {
        Err(KeyError::new(
            "package",
            format!("{:?}: {why}", package.as_str()),
        ))
    };
    let Some(named) = checks.iter().find(|c| c.name == package.check()) else {
        return wrong(format!(
            "no check is named {:?} (name an item of a crossplane-package check, like \"providers/provider-anynines\")",
            package.check()
        ));
    };
    let Some(settings) = named.settings.downcast::<CrossplanePackage>() else {
        return wrong(format!(
            "check {:?} is a {} check, not a crossplane-package check",
            named.name,
            named.type_name()
        ));
    };
    match &settings.names {
        Some(names) if !names.iter().any(|n| n == package.item()) => wrong(format!(
            "check {:?} lists only {} (add {:?} to its names)",
            named.name,
            names.join(", "),
            package.item()
        )),
        _ => Ok(()),
    }
}

fn figment_message(e: &figment::Error) -> String {
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
