//! `[endpoints.healthz]` and `[endpoints.readyz]`: which checks each endpoint counts, and how.

use std::time::Duration;

use figment::value::{Dict, Value};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::values::duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

impl Endpoints {
    /// Fills the keys each `[endpoints.NAME]` leaves out with that endpoint's defaults (`unknown` is `warn`
    /// for healthz, `fail` for readyz), so that the keys are declared once, in [`EndpointPolicy`], and errors
    /// still name `endpoints.NAME.KEY`. A value of the wrong type is left for the deserializer to report.
    pub(super) fn fill_defaults(tree: &mut Dict) {
        let defaults = Endpoints::default();
        let endpoints = tree
            .entry("endpoints".into())
            .or_insert_with(|| Value::from(Dict::new()));
        let Value::Dict(_, endpoints) = endpoints else {
            return;
        };
        for (name, policy) in [("healthz", &defaults.healthz), ("readyz", &defaults.readyz)] {
            let Ok(Value::Dict(_, mut filled)) = Value::serialize(policy) else {
                continue;
            };
            match endpoints.remove(name) {
                None => {}
                Some(Value::Dict(_, given)) => filled.extend(given),
                Some(other) => {
                    endpoints.insert(name.into(), other);
                    continue;
                }
            }
            endpoints.insert(name.into(), Value::from(filled));
        }
    }
}

/// One endpoint's pass/fail policy, as configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPolicy {
    pub include: Patterns,
    pub exclude: Patterns,
    pub warn_only: Patterns,
    #[serde(with = "duration")]
    pub fail_after: Duration,
    #[serde(with = "duration")]
    pub pass_after: Duration,
    pub unknown: UnknownAs,
}

impl EndpointPolicy {
    fn with_unknown(unknown: UnknownAs) -> Self {
        EndpointPolicy {
            include: Patterns::all(),
            exclude: Patterns::default(),
            warn_only: Patterns::default(),
            fail_after: Duration::ZERO,
            pass_after: Duration::ZERO,
            unknown,
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
    /// As written, for `--check-config` and for checking what each can reach.
    source: Vec<String>,
}

impl Default for Patterns {
    /// No pattern: matches nothing.
    fn default() -> Patterns {
        Patterns {
            set: GlobSet::empty(),
            source: Vec::new(),
        }
    }
}

impl Serialize for Patterns {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Patterns {
    /// Compiled as they are read, so a bad pattern is named by its key; what each can reach is checked
    /// once the checks are known ([`Patterns::reach`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Patterns, D::Error> {
        let source = Vec::<String>::deserialize(d)?;
        Patterns::compiled(source).map_err(serde::de::Error::custom)
    }
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
        let compiled = Patterns::compiled(patterns.to_vec())?;
        compiled.reach(checks)?;
        Ok(compiled)
    }

    /// `*`: every check.
    fn all() -> Patterns {
        // `*` always compiles; the empty set is never reached.
        Patterns::compiled(vec!["*".into()]).unwrap_or_default()
    }

    pub(crate) fn compiled(source: Vec<String>) -> Result<Patterns, PatternError> {
        let mut builder = GlobSetBuilder::new();
        for p in &source {
            builder.add(compile(p)?);
        }
        let set = builder
            .build()
            .map_err(|source_error| PatternError::Invalid {
                pattern: source.join(", "),
                source: source_error,
            })?;
        Ok(Patterns { set, source })
    }

    /// Checks that each pattern can match something: a check, or items of a check.
    pub fn reach(&self, checks: &[&str]) -> Result<(), PatternError> {
        for p in &self.source {
            let matcher = compile(p)?.compile_matcher();
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
        }
        Ok(())
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
