//! Times as Kubernetes writes them (RFC 3339, whole seconds, UTC).

/// Now, as Kubernetes writes times.
pub fn now_rfc3339() -> String {
    format_time(jiff::Timestamp::now())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    format_time(t)
}

/// `t` shifted by `offset_secs` (negative: earlier), as Kubernetes writes times.
pub fn rfc3339_offset(offset_secs: i64) -> String {
    let now = jiff::Timestamp::now();
    let shifted = now
        .checked_add(jiff::SignedDuration::from_secs(offset_secs))
        .unwrap_or(now);
    format_time(shifted)
}

fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_kubernetes() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
    }
}
