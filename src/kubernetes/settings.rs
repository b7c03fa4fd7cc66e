//! `[kubernetes]` and `[clusters.NAME]`: how to reach each cluster, how often to prove it alive, and the
//! bounds of what its watches may hold. The connection (`connection`) and the watches
//! (`watch`) read them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::values::{duration, text};

/// How to reach one Kubernetes cluster. `[kubernetes]` is the default cluster; `[clusters.NAME]` the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<std::path::PathBuf>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::option"
    )]
    pub context: Option<String>,
    #[serde(with = "duration")]
    pub stale_after: Duration,
    /// The cluster is asked `GET /readyz` once per interval, however busy its watches are (`/version`
    /// where `/readyz` is refused).
    #[serde(with = "duration")]
    pub probe_interval: Duration,
    /// A probe unanswered this long makes the cluster silent since its last answer. Silence shows within
    /// `probe_interval + probe_timeout` (20 s by default), so its items turn `unknown` within `stale_after`
    /// plus that of the last answer.
    #[serde(with = "duration")]
    pub probe_timeout: Duration,
    /// More objects than this in one watch (counted as they arrive, LIST pages included) fail that watch.
    pub max_objects: usize,
    /// The largest answer read from the API server in bytes: a whole LIST page, or one watch event.
    pub max_body: u64,
    /// Whether to write Kubernetes Events about transitions (`[kubernetes]` only; `None`: yes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<bool>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            kubeconfig: None,
            context: None,
            stale_after: Duration::from_secs(60),
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(10),
            max_objects: MAX_OBJECTS,
            max_body: MAX_BODY,
            events: None,
        }
    }
}

impl Cluster {
    /// What serde cannot check; the key is relative to the cluster's section.
    pub(crate) fn validate(&self) -> Result<(), crate::values::KeyError> {
        use crate::values::KeyError;
        for (key, value) in [
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
        ] {
            if value.is_zero() {
                return Err(KeyError::new(key, "must be more than 0s"));
            }
        }
        if self.max_objects == 0 {
            return Err(KeyError::new("max_objects", "must be at least 1"));
        }
        if self.max_body < 4096 {
            return Err(KeyError::new(
                "max_body",
                "must be at least 4096 bytes (one Kubernetes object can be larger)",
            ));
        }
        Ok(())
    }
}

/// Default `max_objects`, chosen with the shipped containers' memory limit (320Mi) so that this bound trips
/// first (BENCHMARKS.md, "Memory: the bounds and the limit"): about 11 MiB without objects, about 5.5 KiB per object buffered
/// by a LIST that never completes, about 7 KiB per object once it is an item. Seven watches (the shipped
/// checks and the package and ClusterBinding ones) all paging endlessly up to the bound at once need about
/// 95 MiB; all holding 2 000 items, with one relisting, about 118 MiB.
pub(crate) const MAX_OBJECTS: usize = 2_000;

/// Default `max_body`: a LIST page of [`PAGE_SIZE`] objects of 80 KiB, or one object near etcd's 1.5 MiB.
/// kube decodes a page whole, so this bounds the transient memory of each list request.
pub(crate) const MAX_BODY: u64 = 8 * 1024 * 1024;

/// The default cluster and the named ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clusters<'a> {
    pub default: &'a Cluster,
    pub named: &'a std::collections::BTreeMap<String, Cluster>,
}

impl<'a> Clusters<'a> {
    /// The cluster `name` (`None`: the default one).
    pub(crate) fn get(&self, name: Option<&str>) -> Option<&'a Cluster> {
        match name {
            None => Some(self.default),
            Some(n) => self.named.get(n),
        }
    }
}
