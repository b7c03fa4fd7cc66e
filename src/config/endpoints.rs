//! `[endpoints.healthz]` and `[endpoints.readyz]`: which checks each endpoint counts, and how.

use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::values::duration;

#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    pub healthz: EndpointPolicy,
    pub readyz: EndpointPolicy,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            healthz: EndpointPolicy::with_unknown(UnknownAs::Warn),
            readyz: EndpointPolicy::with_unknown(UnknownAs::Fail),
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

/// One endpoint's pass/fail policy, as configured.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointPolicy {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub warn_only: Vec<String>,
    #[serde(with = "duration")]
    pub fail_after: Duration,
    #[serde(with = "duration")]
    pub pass_after: Duration,
    pub unknown: UnknownAs,
}

impl EndpointPolicy {
    fn with_unknown(unknown: UnknownAs) -> Self {
        EndpointPolicy {
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
    fn over(self, d: EndpointPolicy) -> EndpointPolicy {
        EndpointPolicy {
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

/// Glob patterns over check names (`providers`) and item names (`providers/provider-anynines`).
/// `*` does not cross `/`, so `providers` means the check and `providers/*` its items.
#[derive(Debug, Clone)]
pub struct Patterns {
    set: GlobSet,
}

/// Why a pattern of `include`, `exclude` or `warn_only` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("invalid pattern \"{pattern}\": {source}")]
    Invalid {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("pattern \"{pattern}\" matches no check (checks are: {checks})")]
    MatchesNothing { pattern: String, checks: String },
}

impl Patterns {
    /// Compiles `patterns` and checks that each can match something: a check, or items of a check.
    pub fn validated(patterns: &[String], checks: &[&str]) -> Result<Patterns, PatternError> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let glob = compile(p)?;
            let matcher = glob.compile_matcher();
            let check_part = p.split('/').next().unwrap_or(p);
            let check_matcher = compile(check_part)?.compile_matcher();
            let reaches = checks
                .iter()
                .any(|c| matcher.is_match(c) || (p.contains('/') && check_matcher.is_match(c)));
            if !reaches {
                return Err(PatternError::MatchesNothing {
                    pattern: p.clone(),
                    checks: checks.join(", "),
                });
            }
            builder.add(glob);
        }
        let set = builder.build().map_err(|source| PatternError::Invalid {
            pattern: patterns.join(", "),
            source,
        })?;
        Ok(Patterns { set })
    }

    /// Whether the pattern set matches the check itself or the item.
    pub fn matches(&self, check: &str, item: &str) -> bool {
        self.set.is_match(check) || self.set.is_match(item)
    }
}

fn compile(p: &str) -> Result<Glob, PatternError> {
    globset::GlobBuilder::new(p)
        .literal_separator(true)
        .build()
        .map_err(|source| PatternError::Invalid {
            pattern: p.to_string(),
            source,
        })
}
