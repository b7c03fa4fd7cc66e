//! Kubernetes label and field selectors, as the API server reads them from the query string.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A parsed selector: every term must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(Vec<Term>);

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for raw in split_top_level(text) {
            let t = raw.trim();
            if t.is_empty() {
                continue;
            }
            let term = if let Some((k, rest)) = t.split_once(" notin ") {
                Term::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = t.split_once(" in ") {
                Term::In(k.trim().into(), set(rest)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Term::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = t.strip_prefix('!') {
                Term::Absent(k.trim().into())
            } else {
                Term::Exists(t.into())
            };
            if let Term::Eq(k, _) | Term::Ne(k, _) | Term::Exists(k) | Term::Absent(k) = &term {
                if k.is_empty() || k.contains(char::is_whitespace) {
                    return Err(format!("invalid selector term {t:?}"));
                }
            }
            terms.push(term);
        }
        Ok(Selector(terms))
    }

    /// Whether `lookup(key)` (a label or a field of the object) satisfies every term.
    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|t| match t {
            Term::Eq(k, v) => lookup(k).as_deref() == Some(v),
            Term::Ne(k, v) => lookup(k).as_deref() != Some(v),
            Term::In(k, vs) => lookup(k).is_some_and(|x| vs.contains(&x)),
            Term::NotIn(k, vs) => lookup(k).is_none_or(|x| !vs.contains(&x)),
            Term::Exists(k) => lookup(k).is_some(),
            Term::Absent(k) => lookup(k).is_none(),
        })
    }
}

fn set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("invalid set {text:?}: expected (a,b)"))?;
    Ok(inner.split(',').map(|s| s.trim().to_string()).collect())
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A label of an object.
pub fn label(obj: &Value, key: &str) -> Option<String> {
    obj.pointer("/metadata/labels")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

/// The Event fields kubectl and event recorders select on (`involvedObject.name=…`, `regarding.uid=…`);
/// a missing one reads as empty, as the API server's field sets do.
const EVENT_FIELDS: [&str; 6] = [
    "involvedObject.",
    "regarding.",
    "reason",
    "type",
    "source",
    "reportingController",
];

/// A field the fake supports in field selectors.
pub fn field(obj: &Value, key: &str) -> Option<String> {
    if obj["kind"] == "Event" && EVENT_FIELDS.iter().any(|f| key.starts_with(f)) {
        let key = if key == "source" {
            "source.component"
        } else {
            key
        };
        let pointer = format!("/{}", key.replace('.', "/"));
        let value = obj
            .pointer(&pointer)
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Some(value.to_string());
    }
    let pointer = match key {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" => "/metadata/namespace",
        "status.phase" => "/status/phase",
        _ => return None,
    };
    obj.pointer(pointer)?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_terms() {
        let obj = json!({"metadata": {"labels": {"app": "x", "tier": "db"}}});
        let m = |s: &str| {
            Selector::parse(s)
                .expect("valid")
                .matches(|k| label(&obj, k))
        };
        assert!(m("app=x"));
        assert!(m("app==x,tier"));
        assert!(!m("app!=x"));
        assert!(m("tier in (db,web),!missing"));
        assert!(!m("tier notin (db)"));
        assert!(!m("missing"));
        assert!(Selector::parse("a b=c").is_err());
    }
}
