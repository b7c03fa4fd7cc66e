//! Watch failures (and the few requests outside the watches: Events, the Lease) in words for an operator: what
//! was refused, on which resource, and what to grant or fix, instead of kube's error (whose API variant prints
//! a Rust debug dump of the `Status`).

use kube::core::Status;
use kube::runtime::watcher;

use crate::human::error_chain;

/// The resource a watch reads (or a request writes), for messages.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    /// `providerconfigs.dataservices.anynines.com`, `pods`.
    pub qualified: String,
    pub plural: String,
    /// Empty for the core group.
    pub group: String,
    pub namespace: Option<String>,
    /// `default` or the name under `[clusters.NAME]`.
    pub cluster: String,
}

impl Resource {
    /// A namespaced resource of the default cluster that klutch-health writes itself (Events, the Lease).
    pub(crate) fn written(group: &str, plural: &str, namespace: &str) -> Resource {
        Resource {
            qualified: format!("{plural}.{group}"),
            plural: plural.into(),
            group: group.into(),
            namespace: Some(namespace.into()),
            cluster: "default".into(),
        }
    }
}

/// Which request of a watch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    List,
    Watch,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Watch => "watch",
        }
    }
}

/// The request a watcher error comes from.
pub(crate) fn verb(e: &watcher::Error) -> Verb {
    match e {
        watcher::Error::InitialListFailed(_) | watcher::Error::NoResourceVersion => Verb::List,
        watcher::Error::WatchStartFailed(_)
        | watcher::Error::WatchError(_)
        | watcher::Error::WatchFailed(_) => Verb::Watch,
    }
}

/// Whether the API server itself refused (a Status answer or an ERROR event), as opposed to a connection that
/// failed: only a refusal means LIST works while WATCH does not; a lost connection is the cluster's trouble.
/// `410 Gone` (the resourceVersion was compacted away) is no refusal: the watch relists, as it should.
pub(crate) fn refused(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(status) => status.code != 410,
        e => matches!(
            e,
            watcher::Error::InitialListFailed(kube::Error::Api(_))
                | watcher::Error::WatchStartFailed(kube::Error::Api(_))
                | watcher::Error::WatchFailed(kube::Error::Api(_))
        ),
    }
}

/// Whether `e` is what a busy, restarting or unreachable server causes, which passes by itself: no answer
/// (a connection refused, reset or timed out), `429`, a `5xx`, or `410 Gone` (history compacted away). A
/// refusal (`403`, `404`, `422`) or an answer too large stays until someone acts.
pub(crate) fn transient(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 429 || s.code >= 500,
        watcher::Error::WatchError(s) => s.code == 410 || s.code == 429 || s.code >= 500,
        e => !super::answers::too_large(e),
    }
}

/// Whether the server answered `403 Forbidden`, to the LIST or the WATCH.
pub(crate) fn forbidden(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::WatchError(s) => s.code == 403,
        _ => false,
    }
}

/// Whether a WATCH was refused as it started with `403 Forbidden`: an identity without the verb "watch".
pub(crate) fn forbidden_watch(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 403)
}

/// Whether a WATCH was answered 429 or 5xx as it started: the API server is busy or its storage is
/// (re)initializing, which is no refusal; the WATCH is asked again after a backoff.
pub(crate) fn throttled(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(status))
        if status.code == 429 || status.code >= 500)
}

/// One line: `watch on pods in namespace x forbidden: grant the verb "watch" …`.
pub(crate) fn describe(e: &watcher::Error, on: &Resource) -> String {
    let verb = verb(e);
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => {
            answer(verb.name(), status, on, "")
        }
        watcher::Error::WatchError(status) => answer(
            verb.name(),
            status,
            on,
            " (an ERROR event on the open watch)",
        ),
        // kube's "ServiceError: " says nothing: the client stack's own error does.
        watcher::Error::InitialListFailed(kube::Error::Service(e))
        | watcher::Error::WatchStartFailed(kube::Error::Service(e))
        | watcher::Error::WatchFailed(kube::Error::Service(e)) => {
            format!(
                "{} on {} failed: {}",
                verb.name(),
                on.qualified,
                error_chain(&**e)
            )
        }
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => {
            format!(
                "{} on {} failed: {}",
                verb.name(),
                on.qualified,
                error_chain(e)
            )
        }
        watcher::Error::NoResourceVersion => format!(
            "list on {} failed: the answer has no metadata.resourceVersion",
            on.qualified
        ),
    }
}

/// One line for a request outside the watches (`verb` on `on`): a refusal says what to grant, as for a watch;
/// any other error in its own words.
pub(crate) fn request(e: &kube::Error, verb: &str, on: &Resource) -> String {
    match e {
        kube::Error::Api(status) => answer(verb, status, on, ""),
        kube::Error::Service(e) => {
            format!("{verb} on {} failed: {}", on.qualified, error_chain(&**e))
        }
        e => format!("{verb} on {} failed: {}", on.qualified, error_chain(e)),
    }
}

fn answer(verb: &str, status: &Status, on: &Resource, how: &str) -> String {
    let said = if status.message.is_empty() {
        String::new()
    } else {
        format!(" (the API server said: {})", status.message)
    };
    match status.code {
        401 => format!(
            "{} on {} refused: 401 Unauthorized{how}: cluster {} does not accept klutch-health's credentials; renew the token or client certificate of its kubeconfig or service account{said}",
            verb,
            on.qualified,
            on.cluster
        ),
        403 => {
            let group = if on.group.is_empty() {
                "the core API group".to_string()
            } else {
                format!("API group \"{}\"", on.group)
            };
            let scope = match &on.namespace {
                Some(ns) => format!("in namespace {ns} (a Role)"),
                None => "cluster-wide (a ClusterRole)".to_string(),
            };
            format!(
                "{} on {} forbidden{how}: grant the verb \"{}\" on \"{}\" in {group} {scope} to klutch-health's service account on cluster {}{said}",
                verb,
                on.qualified,
                verb,
                on.plural,
                on.cluster
            )
        }
        // A resource the server does not serve answers a plain `404 page not found`: its CRD is gone.
        404 => format!(
            "the API server no longer serves {}: is {} installed?",
            on.qualified,
            installer(&on.group)
        ),
        code => format!(
            "{} on {} failed{how}: {code} {}{said}",
            verb,
            on.qualified,
            if status.reason.is_empty() {
                "error"
            } else {
                &status.reason
            }
        ),
    }
}

/// Who installs the resources of an API group, for "is … installed?".
fn installer(group: &str) -> &'static str {
    match group {
        "dataservices.anynines.com" => "provider-anynines",
        "klutch.anynines.com" => "klutch-bind",
        "pkg.crossplane.io" => "Crossplane",
        _ => "its CustomResourceDefinition",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> Status {
        let mut s = Status::failure(message, reason);
        s.code = code;
        s
    }

    fn providerconfigs() -> Resource {
        Resource {
            qualified: "providerconfigs.dataservices.anynines.com".into(),
            plural: "providerconfigs".into(),
            group: "dataservices.anynines.com".into(),
            namespace: None,
            cluster: "default".into(),
        }
    }

    #[test]
    fn a_forbidden_watch_names_the_verb_the_resource_and_what_to_grant() {
        let e = watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(status(
            403,
            "Forbidden",
            "providerconfigs.dataservices.anynines.com is forbidden: User \"u\" cannot watch",
        ))));
        let m = describe(&e, &providerconfigs());
        assert_eq!(
            m,
            "watch on providerconfigs.dataservices.anynines.com forbidden: grant the verb \"watch\" on \"providerconfigs\" in API group \"dataservices.anynines.com\" cluster-wide (a ClusterRole) to klutch-health's service account on cluster default (the API server said: providerconfigs.dataservices.anynines.com is forbidden: User \"u\" cannot watch)"
        );
        assert!(!m.contains("Status {"), "no debug dump: {m}");
    }

    #[test]
    fn unauthorized_says_to_renew_the_credentials() {
        let pods = Resource {
            qualified: "pods".into(),
            plural: "pods".into(),
            group: String::new(),
            namespace: Some("crossplane-system".into()),
            cluster: "app".into(),
        };
        let e = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status(
            401,
            "Unauthorized",
            "Unauthorized",
        ))));
        let m = describe(&e, &pods);
        assert!(
            m.starts_with("list on pods refused: 401 Unauthorized: cluster app does not accept klutch-health's credentials; renew"),
            "{m}"
        );
        let e = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status(
            403,
            "Forbidden",
            "",
        ))));
        assert_eq!(describe(&e, &pods), "list on pods forbidden: grant the verb \"list\" on \"pods\" in the core API group in namespace crossplane-system (a Role) to klutch-health's service account on cluster app");
    }

    #[test]
    fn a_refused_event_write_names_the_verb_and_the_namespace_to_grant_it_in() {
        let events = Resource {
            qualified: "events.events.k8s.io".into(),
            plural: "events".into(),
            group: "events.k8s.io".into(),
            namespace: Some("bind".into()),
            cluster: "default".into(),
        };
        let e = kube::Error::Api(Box::new(status(
            403,
            "Forbidden",
            "events.events.k8s.io is forbidden",
        )));
        assert_eq!(
            request(&e, "create", &events),
            "create on events.events.k8s.io forbidden: grant the verb \"create\" on \"events\" in API group \"events.k8s.io\" in namespace bind (a Role) to klutch-health's service account on cluster default (the API server said: events.events.k8s.io is forbidden)"
        );
    }

    #[test]
    fn a_resource_no_longer_served_asks_whether_its_installer_is_installed() {
        let e = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status(
            404,
            "Failed to parse error data",
            "404 page not found",
        ))));
        assert_eq!(
            describe(&e, &providerconfigs()),
            "the API server no longer serves providerconfigs.dataservices.anynines.com: is provider-anynines installed?"
        );
    }

    #[test]
    fn an_expired_watch_is_no_refusal() {
        let expired = watcher::Error::WatchError(Box::new(status(410, "Expired", "too old")));
        assert!(!refused(&expired), "a 410 relists like any broken watch");
        let error = watcher::Error::WatchError(Box::new(status(500, "InternalError", "etcd")));
        assert!(refused(&error));
    }

    #[test]
    fn an_error_event_says_so() {
        let e = watcher::Error::WatchError(Box::new(status(500, "InternalError", "etcd")));
        assert_eq!(
            describe(&e, &providerconfigs()),
            "watch on providerconfigs.dataservices.anynines.com failed (an ERROR event on the open watch): 500 InternalError (the API server said: etcd)"
        );
    }
}
