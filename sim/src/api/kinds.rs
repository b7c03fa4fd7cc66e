//! The resource types the fake serves. Adding a kind is one line in [`KINDS`]; objects of any other kind
//! are refused with [`ApplyError::UnknownKind`] instead of vanishing.

/// One served resource type, as discovery describes it.
#[derive(Debug, Clone)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Accepts create, update and patch (what klutch-health itself writes); every other kind is read-only.
    pub writable: bool,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        group,
        version,
        plural,
        kind,
        namespaced,
        short_names: &[],
        categories: &[],
        writable: false,
    }
}

const CROSSPLANE: &[&str] = &["crossplane"];
const PKG: &[&str] = &["crossplane", "pkg"];
const MANAGED: &[&str] = &["crossplane", "managed", "anynines"];

/// provider-anynines' managed resources, cluster-scoped like its CRDs.
const fn managed(plural: &'static str, kind: &'static str) -> Kind {
    Kind {
        categories: MANAGED,
        ..self::kind("dataservices.anynines.com", "v1", plural, kind, false)
    }
}

/// Every kind a fresh [`super::FakeApi`] serves.
pub const KINDS: &[Kind] = &[
    Kind {
        short_names: &["po"],
        ..kind("", "v1", "pods", "Pod", true)
    },
    Kind {
        short_names: &["ns"],
        ..kind("", "v1", "namespaces", "Namespace", false)
    },
    Kind {
        short_names: &["ev"],
        ..kind("", "v1", "events", "Event", true)
    },
    Kind {
        short_names: &["deploy"],
        ..kind("apps", "v1", "deployments", "Deployment", true)
    },
    Kind {
        writable: true,
        ..kind("events.k8s.io", "v1", "events", "Event", true)
    },
    Kind {
        writable: true,
        ..kind("coordination.k8s.io", "v1", "leases", "Lease", true)
    },
    Kind {
        categories: PKG,
        ..kind("pkg.crossplane.io", "v1", "providers", "Provider", false)
    },
    Kind {
        categories: PKG,
        ..kind(
            "pkg.crossplane.io",
            "v1",
            "configurations",
            "Configuration",
            false,
        )
    },
    Kind {
        categories: PKG,
        ..kind("pkg.crossplane.io", "v1", "functions", "Function", false)
    },
    Kind {
        categories: CROSSPLANE,
        ..kind(
            "dataservices.anynines.com",
            "v1",
            "providerconfigs",
            "ProviderConfig",
            false,
        )
    },
    Kind {
        categories: CROSSPLANE,
        ..kind(
            "kubernetes.crossplane.io",
            "v1alpha1",
            "providerconfigs",
            "ProviderConfig",
            false,
        )
    },
    kind(
        "klutch.anynines.com",
        "v1alpha1",
        "clusterbindings",
        "ClusterBinding",
        true,
    ),
    kind(
        "klutch.anynines.com",
        "v1alpha1",
        "appclusterbindings",
        "AppClusterBinding",
        true,
    ),
    managed("serviceinstances", "ServiceInstance"),
    managed("servicebindings", "ServiceBinding"),
    managed("backups", "Backup"),
    managed("restores", "Restore"),
];

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Why the fake refused an object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error(
        "the fake API server does not serve kind {kind:?} of apiVersion {api_version:?}: add it to KINDS in \
         sim/src/api/kinds.rs or call FakeApi::register first"
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("{kind:?} object has no metadata.name: every object needs one")]
    NoName { kind: String },
}
