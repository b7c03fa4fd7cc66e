//! Item names the service makes up itself, as opposed to items named after a Kubernetes object or an
//! upstream key. Each begins with `_`, which no Kubernetes object name can (DNS-1123 names are lowercase
//! letters, digits, `-` and `.`, and begin with a letter or digit), and upstream keys that are no such name
//! are escaped (`checks::backend_status::item_name`): so none of these can ever collide with an item named
//! after an object, whatever a cluster holds. Each stays one URL path segment (`/readyz/CHECK/_watch`) and one
//! metric label as it is.

/// `backend-status`: the poll itself (refused, timed out, non-2xx, unreadable), beside one item per key.
pub const ENDPOINT: &str = "_endpoint";

/// There is nothing to judge: no object listed, no pod matches, `{}` from the health server.
pub const NONE: &str = "_none";

/// The watch itself, where its objects give no item yet (waiting for its initial sync) or it cannot watch
/// while it can list (a refused WATCH, ERROR events).
pub const WATCH: &str = "_watch";

/// `deployment` with several candidate names: none of them exists.
pub const MISSING: &str = "_missing";

/// A configured check that has published nothing yet (between a reload adding it and its first publish).
pub const PENDING: &str = "_pending";

/// A check whose `require` cannot be met by the items it has.
pub const REQUIRE: &str = "_require";

/// `[maintenance]`: the window shows as the item `maintenance/window`. `maintenance` is a check name the
/// service reserves ([`CHECKS`]), so no configured check's item can be this one.
pub const MAINTENANCE: (&str, &str) = ("maintenance", "window");

/// Check names no `[[check]]` may take, because the service names items of its own under them:
/// `maintenance/window`, and `cluster/NAME` for an API server (root causes).
pub const CHECKS: [&str; 2] = ["cluster", MAINTENANCE.0];

/// Every reserved item name, for tests and documentation.
pub const ITEMS: [&str; 6] = [ENDPOINT, NONE, WATCH, MISSING, PENDING, REQUIRE];

#[cfg(test)]
mod tests {
    use super::*;

    /// DNS-1123 subdomain: what every Kubernetes object name is.
    fn is_kubernetes_name(s: &str) -> bool {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        !s.is_empty()
            && s.len() <= 253
            && s.starts_with(ok)
            && s.ends_with(ok)
            && s.chars().all(|c| ok(c) || c == '-' || c == '.')
    }

    #[test]
    fn no_reserved_item_is_a_name_any_object_can_have() {
        for name in ITEMS {
            assert!(
                !is_kubernetes_name(name),
                "{name} could be an object's name"
            );
            assert!(!name.contains('/') && !name.contains(' '), "{name}");
        }
        assert!(is_kubernetes_name("none") && is_kubernetes_name("watch"));
    }
}
