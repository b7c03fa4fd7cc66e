//! Text for people, shared by every module that writes a message: durations, error chains, and the bounds
//! of what tenants write. Kept apart so that no module has to reach into another's internals just to word a
//! message.

use std::time::Duration;

/// A duration for people: whole seconds (or milliseconds below one second).
pub(crate) fn duration(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

/// An error and its causes on one line: hyper's top-level errors alone say little ("client error (Connect)").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A point in time for messages, to the second: `2026-11-25T16:02:11Z`.
pub(crate) fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The longest name or reference kept from an object (Kubernetes' own bound for object names): a tenant's
/// `instanceName` or `providerConfigRef.name` is not validated by the API server and may be any length.
pub const NAME_LIMIT: usize = 253;
/// The longest condition message, reason text or status string kept from an object, in bytes.
pub const MESSAGE_LIMIT: usize = 1024;

/// `text` cut to at most `limit` bytes at a character boundary, ending in `…(N bytes cut)` when cut, so that
/// what tenants write into their objects can never grow what is kept, logged or served.
pub fn cut(mut text: String, limit: usize) -> String {
    if let Some(end) = cut_end(&text, limit) {
        let cut = text.len() - end;
        text.truncate(end);
        text.push_str(&marker(cut));
    }
    text
}

/// [`cut`] for borrowed text: copies only what is kept.
pub fn cut_str(text: &str, limit: usize) -> String {
    match cut_end(text, limit) {
        Some(end) => format!("{}{}", &text[..end], marker(text.len() - end)),
        None => text.to_string(),
    }
}

/// Where `text` is cut to fit `limit` with its marker; `None` when it fits whole.
fn cut_end(text: &str, limit: usize) -> Option<usize> {
    if text.len() <= limit {
        return None;
    }
    // The marker is sized for the most that could be cut, so that the text and its marker fit together.
    let mut end = limit.saturating_sub(marker(text.len()).len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(end)
}

fn marker(cut: usize) -> String {
    format!("…({cut} bytes cut)")
}

/// Every string in `value` cut to [`MESSAGE_LIMIT`]: the status kept of a watched object holds conditions
/// whose messages a tenant's input can fill.
pub fn bound_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.len() > MESSAGE_LIMIT => {
            *s = cut(std::mem::take(s), MESSAGE_LIMIT);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(bound_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(bound_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_text_fits_its_limit_at_a_character_boundary_and_says_how_much_was_cut() {
        for (text, limit) in [
            ("é".repeat(5000), MESSAGE_LIMIT),
            ("x".repeat(300), NAME_LIMIT),
            ("ab€".repeat(200), 50),
        ] {
            let kept = cut(text.clone(), limit);
            assert!(kept.len() <= limit, "{} > {limit}", kept.len());
            let (head, marker) = kept.split_once('…').expect("a marker");
            assert!(text.starts_with(head));
            assert_eq!(marker, format!("({} bytes cut)", text.len() - head.len()));
            assert_eq!(cut_str(&text, limit), kept);
        }
        assert_eq!(cut("x".repeat(253), NAME_LIMIT), "x".repeat(253));
        assert_eq!(cut_str("short", 5), "short");
    }

    /// A ProviderConfig's or a binding's status with a tenant's 10 KB message: kept bounded, the rest as is.
    #[test]
    fn every_string_of_a_kept_status_is_bounded() {
        let mut status = serde_json::json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "message": "m".repeat(10_000)},
        ], "health": {"lastMessage": "short", "lastStatus": false}}});
        bound_strings(&mut status);
        let message = status["status"]["conditions"][0]["message"]
            .as_str()
            .expect("a string");
        assert!(message.len() <= MESSAGE_LIMIT, "{}", message.len());
        assert!(message.ends_with("bytes cut)"), "{message}");
        assert_eq!(status["status"]["health"]["lastMessage"], "short");
        assert_eq!(status["status"]["conditions"][0]["type"], "Ready");
    }
}
