//! Value formats of configuration keys, shared by the configuration file and each check type's settings:
//! durations (`10s`), timestamps (`2026-12-01T00:00:00Z`, quoted or a TOML datetime), text keys the
//! environment can set, and `http://` URLs.

/// A key whose value cannot be used: where it is, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{why}", if .path.is_empty() { String::new() } else { format!("{}: ", .path) })]
pub struct KeyError {
    /// `server.listen`, `timeout`; empty for the table itself.
    pub path: String,
    pub why: String,
}

impl KeyError {
    pub(crate) fn new(path: impl Into<String>, why: impl Into<String>) -> KeyError {
        KeyError {
            path: path.into(),
            why: why.into(),
        }
    }
}

/// Deserializes a figment tree; an error names the key's path.
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
    value: &figment::value::Value,
) -> Result<T, KeyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        KeyError {
            path: if path == "." { String::new() } else { path },
            why: e.into_inner().kind.to_string(),
        }
    })
}

/// Durations written like `10s`, `2m`, `1h30m`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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
}

/// Timestamps (`until`, `from`): RFC 3339 with an offset, written as a string or as the TOML datetime it is
/// (`until = 2026-12-01T00:00:00Z`, unquoted).
pub(crate) mod timestamp {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        /// How the TOML reader hands a datetime through serde.
        Toml {
            #[serde(rename = "$__toml_private_datetime")]
            datetime: String,
        },
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = match Raw::deserialize(d) {
            Ok(Raw::Text(t) | Raw::Toml { datetime: t }) => t,
            Err(_) => {
                return Err(serde::de::Error::custom(
                    "invalid type: expected a time like 2026-12-01T00:00:00Z",
                ))
            }
        };
        text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid time \"{text}\": write it in RFC 3339 with an offset, like 2026-12-01T00:00:00Z"
            ))
        })
    }

    pub(crate) fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        deserialize(d).map(Some)
    }
}

/// Text keys that the environment can set. Environment values have no type, and figment reads
/// `KLUTCH_HEALTH_SERVER__SERVICE_ID=2024` as a number and `…DESCRIPTION=true` as a boolean: both are text here.
pub(crate) mod text {
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

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match Raw::deserialize(d) {
            Ok(Raw::Text(t)) => Ok(t),
            Ok(Raw::Unsigned(n)) => Ok(n.to_string()),
            Ok(Raw::Signed(n)) => Ok(n.to_string()),
            Ok(Raw::Float(n)) => Ok(n.to_string()),
            Ok(Raw::Bool(b)) => Ok(b.to_string()),
            Err(_) => Err(serde::de::Error::custom("invalid type: expected a string")),
        }
    }

    pub(crate) fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        deserialize(d).map(Some)
    }
}

/// `http://` URLs, checked when the configuration is read rather than at the first poll.
pub(crate) mod http_url {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(u: &hyper::Uri, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&u.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<hyper::Uri, D::Error> {
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
