//! Every HTTP route, once: the dispatch, the public listener's subset, the request counters' `path` labels
//! and the probes' pre-resolved counters all read [`ROUTES`].

use crate::verdict::report::Endpoint;

/// What a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// An endpoint's verdict.
    Health(Endpoint),
    /// An endpoint's verdict on one check or item, named after the route's prefix.
    HealthOf(Endpoint),
    /// Alive, whatever the verdict.
    Livez,
    Metrics,
    /// The `backend-status` check's last poll, as provider-anynines answered it.
    Passthrough,
    History,
    /// The status page.
    Page,
}

/// One route.
#[derive(Debug)]
pub struct Route {
    /// The path, as the request counters label it; a trailing `{name}` stands for the rest of the path.
    pub path: &'static str,
    pub serves: Serves,
    /// Served on the public listener too (else only on the private one).
    pub public: bool,
    /// The response codes that probes hit all the time: their request counters are resolved once.
    pub probed: &'static [u16],
}

/// The `path` label of a request no route serves.
pub const OTHER: &str = "other";

/// Every route.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/readyz",
        serves: Serves::Health(Endpoint::Readyz),
        public: true,
        probed: &[200, 503],
    },
    Route {
        path: "/healthz",
        serves: Serves::Health(Endpoint::Healthz),
        public: true,
        probed: &[200, 503],
    },
    Route {
        path: "/livez",
        serves: Serves::Livez,
        public: true,
        probed: &[200],
    },
    Route {
        path: "/readyz/{name}",
        serves: Serves::HealthOf(Endpoint::Readyz),
        public: true,
        probed: &[],
    },
    Route {
        path: "/healthz/{name}",
        serves: Serves::HealthOf(Endpoint::Healthz),
        public: true,
        probed: &[],
    },
    Route {
        path: "/metrics",
        serves: Serves::Metrics,
        public: false,
        probed: &[],
    },
    Route {
        path: "/backend-health",
        serves: Serves::Passthrough,
        public: false,
        probed: &[],
    },
    Route {
        path: "/backend-status",
        serves: Serves::Passthrough,
        public: false,
        probed: &[],
    },
    Route {
        path: "/history",
        serves: Serves::History,
        public: false,
        probed: &[],
    },
    Route {
        path: "/",
        serves: Serves::Page,
        public: false,
        probed: &[],
    },
];

impl Route {
    /// The route of `path`, and the rest of it that a trailing `{name}` stands for.
    pub fn find(path: &str) -> Option<(&'static Route, Option<&str>)> {
        ROUTES
            .iter()
            .find_map(|r| match r.path.strip_suffix("{name}") {
                Some(prefix) => path.strip_prefix(prefix).map(|name| (r, Some(name))),
                None => (r.path == path).then_some((r, None)),
            })
    }
}

/// The routes and codes that probes hit all the time.
pub fn probes() -> impl Iterator<Item = (&'static str, u16)> {
    ROUTES
        .iter()
        .flat_map(|r| r.probed.iter().map(move |&code| (r.path, code)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_finds_its_route_and_the_name_after_its_prefix() {
        let found = |p| Route::find(p).map(|(r, name)| (r.path, name));
        assert_eq!(found("/healthz"), Some(("/healthz", None)));
        assert_eq!(
            found("/healthz/a/b"),
            Some(("/healthz/{name}", Some("a/b")))
        );
        assert_eq!(found("/readyz/"), Some(("/readyz/{name}", Some(""))));
        assert_eq!(found("/"), Some(("/", None)));
        assert_eq!(found("/nope"), None);
        assert_eq!(
            probes().collect::<Vec<_>>(),
            [
                ("/readyz", 200),
                ("/readyz", 503),
                ("/healthz", 200),
                ("/healthz", 503),
                ("/livez", 200)
            ]
        );
    }
}
