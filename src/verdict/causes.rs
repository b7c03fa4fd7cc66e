//! Root causes, not symptoms: which bad item explains which. One broken part shows up as many bad items
//! (a crash-looping provider pod: the pod, the Provider, the health server's `_endpoint`, every backend
//! entry, and later every ProviderConfig); [`RULES`] say which explains which, and [`explain`] follows them
//! to the root of each chain. Like the policy, it is a pure function (of the observed items, the links the
//! configuration declares and the clusters' typed liveness facts), so each rule is table-tested.
//!
//! An item is **bad** when its observed status is `fail` or `unknown` — before damping, `warn_only`,
//! silences and the `unknown` mapping, so that both endpoints name the same causes. A cause explains an item
//! only when both are bad. Links come from configuration (a check's `package`, its cluster), facts from the
//! signals ([`Fact`], [`ClusterDown`]), never from names or messages. Causes never change a verdict: they
//! change wording and alerting only.

use std::collections::{BTreeMap, HashMap};

use crate::clock::Moment;
use crate::reserved;
use crate::signals::{ClusterDown, Fact};
use crate::verdict::links::{BACKEND_STATUS, BROKER, MANAGED_RESOURCES, PODS, PROVIDER_CONFIG};
use crate::verdict::report::{Causes, Explained, Item, ItemName, RootCause, Status};

/// The reserved check name under which a cluster's API server is a cause (`cluster/default`): a cause,
/// never an item, counted by no endpoint.
pub const CLUSTER: &str = reserved::CHECKS[0];

/// What the rules read of one observed item: its status as of now, what it is, and its check's links.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub item: &'a Item,
    /// When its observed status began, on both clocks.
    pub since: Moment,
    /// What it is as of now ([`crate::signals::Observation::fact_at`]).
    pub fact: Option<Fact>,
    /// Its check's `package` key.
    pub package: Option<&'a ItemName>,
    /// The cluster its check watches (`Some(None)`: the default one); `None`: it watches no cluster.
    pub cluster: Option<Option<&'a str>>,
}

/// One rule: which bad items explain an item. Adding a rule is one entry of [`RULES`].
pub struct Rule {
    /// Its number in the list (docs/operators/policy.md, "Root causes"); one rule may take two entries, the better cause
    /// first.
    pub number: u8,
    /// What it says, as docs/operators/policy.md lists it (generated from here).
    pub says: &'static str,
    /// The candidate causes of `effect`, best first; [`explain`] takes the first that is bad and does not
    /// close a loop.
    causes: fn(&World<'_>, &Node<'_>) -> Vec<usize>,
}

/// The rules, in the order they are tried: the first rule that names a bad cause gives an item its direct
/// cause.
pub const RULES: &[Rule] = &[
    Rule {
        number: 1,
        says: "`cluster/C` (its API server silent or not ready since T) explains every item of cluster C \
that has been `unknown` since T or later, never a `fail` observed before",
        causes: |w, e| match (e.status, e.cluster) {
            (Status::Unknown, Some(c)) => w
                .cluster(c)
                .filter(|&id| w.nodes[id].since <= e.since)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        },
    },
    Rule {
        number: 2,
        says: "a `pods` check of package P (a pod not Ready: CrashLoopBackOff, Pending, none) explains the \
item P",
        causes: |w, e| w.failing_pods_of(e.name),
    },
    Rule {
        number: 3,
        says: "the pods of P explain `_endpoint` of a `backend-status` check of P when the poll was refused \
(or reset before an answer), timed out or answered 5xx",
        causes: |w, e| match e.package.filter(|_| unanswered(e)) {
            Some(p) => w.failing_pods_of(p),
            None => Vec::new(),
        },
    },
    Rule {
        number: 3,
        says: "… and so does P itself",
        causes: |w, e| match e.package.filter(|_| unanswered(e)) {
            Some(p) => w.id(p).into_iter().collect(),
            None => Vec::new(),
        },
    },
    Rule {
        number: 4,
        says: "a failing `_endpoint` explains the `unknown` items of its own check",
        causes: |w, e| {
            if e.check_type != BACKEND_STATUS
                || e.status != Status::Unknown
                || e.name.item() == reserved::ENDPOINT
            {
                return Vec::new();
            }
            w.id(&format!("{}/{}", e.name.check(), reserved::ENDPOINT))
                .filter(|&id| w.nodes[id].status == Status::Fail)
                .into_iter()
                .collect()
        },
    },
    Rule {
        number: 5,
        says: "the pods of P explain the `unknown` items of a `provider-config` check of P that \
provider-anynines has not checked (never, or not within `check_stale_after`)",
        causes: |w, e| match e.package.filter(|_| unchecked(e)) {
            Some(p) => w.failing_pods_of(p),
            None => Vec::new(),
        },
    },
    Rule {
        number: 5,
        says: "… and so does P itself",
        causes: |w, e| match e.package.filter(|_| unchecked(e)) {
            Some(p) => w.id(p).into_iter().collect(),
            None => Vec::new(),
        },
    },
    Rule {
        number: 6,
        says: "`provider-configs/N` explains `backend-status/N` of the same name (of the same package, where \
both name one)",
        causes: |w, e| {
            if e.check_type != BACKEND_STATUS || e.name.item().starts_with('_') {
                return Vec::new();
            }
            w.of_type_named(PROVIDER_CONFIG, e.name.item())
                .iter()
                .copied()
                .filter(|&id| match (w.nodes[id].package, e.package) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                })
                .collect()
        },
    },
    Rule {
        number: 7,
        says: "failing ProviderConfigs explain a `managed-resources` kind item that would not be bad without the \
resources whose `providerConfigRef` names them (every ProviderConfig past `fail_min` and `fail_share` of that \
kind is bad), those of a `provider-config` check of the same cluster (and of the same package, where both name \
one)",
        causes: |w, e| {
            // Every ProviderConfig the kind fails by must be bad, else it would fail without these too. A
            // same-named one of another cluster or package is another ProviderConfig.
            each_provider_config(e, |pc| bad_provider_config(w, e, pc))
        },
    },
    Rule {
        number: 8,
        says: "a failing `broker/N` (its broker does not answer) explains `provider-configs/N` of its cluster and \
`backend-status/N` of the same name",
        causes: |w, e| {
            let of_cluster = if e.check_type == PROVIDER_CONFIG {
                true
            } else if e.check_type == BACKEND_STATUS && !e.name.item().starts_with('_') {
                false
            } else {
                return Vec::new();
            };
            w.of_type_named(BROKER, e.name.item())
                .iter()
                .copied()
                .filter(|&id| w.nodes[id].status == Status::Fail)
                .filter(|&id| !of_cluster || w.nodes[id].cluster == e.cluster)
                .collect()
        },
    },
    Rule {
        number: 8,
        says: "… and, as rule 7 has it, a `managed-resources` kind item that would not be bad without the \
resources of ProviderConfigs whose broker fails (of its cluster) or which fail, before provider-anynines has \
noticed",
        causes: |w, e| {
            each_provider_config(e, |pc| {
                w.of_type_named(BROKER, pc)
                    .iter()
                    .copied()
                    .filter(|&id| w.nodes[id].cluster == e.cluster)
                    .find(|&id| w.nodes[id].status == Status::Fail)
                    .or_else(|| bad_provider_config(w, e, pc))
            })
        },
    },
];

/// For a `managed-resources` kind that fails only by the resources of some ProviderConfigs: the item that
/// `explain` finds for each of them, or none at all when one of them has none (the kind would fail without
/// the others too).
fn each_provider_config(e: &Node<'_>, explain: impl Fn(&str) -> Option<usize>) -> Vec<usize> {
    let Some(Fact::FailsWithin(pcs)) = &e.fact else {
        return Vec::new();
    };
    if e.check_type != MANAGED_RESOURCES {
        return Vec::new();
    }
    pcs.iter()
        .map(|pc| explain(pc))
        .collect::<Option<_>>()
        .unwrap_or_default()
}

/// The bad ProviderConfig item named `pc` of `e`'s place (cluster, package).
fn bad_provider_config(w: &World<'_>, e: &Node<'_>, pc: &str) -> Option<usize> {
    w.of_type_named(PROVIDER_CONFIG, pc)
        .iter()
        .copied()
        .filter(|&id| same_place(&w.nodes[id], e))
        .find(|&id| w.nodes[id].bad())
}

/// Whether two items are of the same cluster, and of the same package where both name one.
fn same_place(a: &Node<'_>, b: &Node<'_>) -> bool {
    a.cluster == b.cluster
        && match (a.package, b.package) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

/// `_endpoint` of a poll that got no answer a running server gives.
fn unanswered(e: &Node<'_>) -> bool {
    e.check_type == BACKEND_STATUS
        && e.name.item() == reserved::ENDPOINT
        && matches!(e.fact, Some(Fact::NoAnswer(_)))
}

/// A ProviderConfig item `unknown` because provider-anynines has not checked it.
fn unchecked(e: &Node<'_>) -> bool {
    e.check_type == PROVIDER_CONFIG
        && e.status == Status::Unknown
        && e.fact == Some(Fact::Unchecked)
}

/// An item, or a cluster whose API server is down, as the rules see it.
#[derive(Debug)]
struct Node<'a> {
    name: &'a ItemName,
    /// The check's type; [`CLUSTER`] for a cluster.
    check_type: &'static str,
    status: Status,
    since: Moment,
    fact: Option<Fact>,
    package: Option<&'a ItemName>,
    cluster: Option<Option<&'a str>>,
    message: &'a str,
    /// Index into the observed items; `None` for a cluster.
    item: Option<usize>,
}

impl Node<'_> {
    fn bad(&self) -> bool {
        matches!(self.status, Status::Fail | Status::Unknown)
    }
}

/// The nodes and the lookups the rules use, so that each effect costs a few hash lookups, not a scan:
/// a backend with ten thousand entries is judged as fast as one with two.
struct World<'a> {
    /// The clusters whose API server is down, then every item in report order.
    nodes: Vec<Node<'a>>,
    by_name: HashMap<&'a str, usize>,
    /// `(check type, item part)` → the items of checks of that type with that item name.
    by_type_item: HashMap<(&'static str, &'a str), Vec<usize>>,
    /// Package item → the failing items of `pods` checks of that package.
    failing_pods: HashMap<&'a str, Vec<usize>>,
    /// Cluster (`None`: the default one) → its node, while its API server is down.
    clusters: HashMap<Option<&'a str>, usize>,
}

impl<'a> World<'a> {
    fn id(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn cluster(&self, cluster: Option<&str>) -> Option<usize> {
        self.clusters.get(&cluster).copied()
    }

    fn failing_pods_of(&self, package: &ItemName) -> Vec<usize> {
        self.failing_pods
            .get(package.as_str())
            .cloned()
            .unwrap_or_default()
    }

    fn of_type_named(&self, check_type: &'static str, item: &'a str) -> &[usize] {
        self.by_type_item
            .get(&(check_type, item))
            .map_or(&[], Vec::as_slice)
    }
}

/// Each item's cause (parallel to `items`) and every root cause, as of `now`. `down` holds the clusters
/// whose API server does not answer or is not ready (their names `cluster/NAME`, `cluster/default` for the
/// default one), beside the items.
pub fn explain(
    items: &[Observed<'_>],
    down: &BTreeMap<Option<String>, ClusterDown>,
    now: Moment,
) -> (Vec<Option<Explained>>, Causes) {
    let mut watched: Vec<Option<&str>> = items.iter().filter_map(|o| o.cluster).collect();
    watched.sort();
    watched.dedup();
    let cluster_names: Vec<ItemName> = watched
        .iter()
        .map(|c| ItemName::new(CLUSTER, c.unwrap_or("default")))
        .collect();

    let mut world = World {
        nodes: Vec::with_capacity(items.len() + watched.len()),
        by_name: HashMap::with_capacity(items.len()),
        by_type_item: HashMap::new(),
        failing_pods: HashMap::new(),
        clusters: HashMap::new(),
    };
    for (c, name) in watched.iter().zip(&cluster_names) {
        if let Some(d) = down.get(&c.map(str::to_string)) {
            world.clusters.insert(*c, world.nodes.len());
            world.nodes.push(Node {
                name,
                check_type: CLUSTER,
                status: Status::Fail,
                since: d.since,
                fact: None,
                package: None,
                cluster: None,
                message: &d.message,
                item: None,
            });
        }
    }
    let first_item = world.nodes.len();
    for (i, o) in items.iter().enumerate() {
        let id = world.nodes.len();
        let name = &o.item.name;
        world.by_name.insert(name.as_str(), id);
        world
            .by_type_item
            .entry((o.item.check_type, name.item()))
            .or_default()
            .push(id);
        if o.item.check_type == PODS && o.item.status == Status::Fail {
            if let Some(p) = o.package {
                world.failing_pods.entry(p.as_str()).or_default().push(id);
            }
        }
        world.nodes.push(Node {
            name,
            check_type: o.item.check_type,
            status: o.item.status,
            since: o.since,
            fact: o.fact.clone(),
            package: o.package,
            cluster: o.cluster,
            message: &o.item.message,
            item: Some(i),
        });
    }

    // Each bad item's direct cause: the first rule naming a bad cause that does not lead back to it.
    let mut via: Vec<Option<usize>> = vec![None; world.nodes.len()];
    for effect in first_item..world.nodes.len() {
        let node = &world.nodes[effect];
        if !node.bad() {
            continue;
        }
        via[effect] = RULES.iter().find_map(|rule| {
            (rule.causes)(&world, node).into_iter().find(|&cause| {
                cause != effect && world.nodes[cause].bad() && !leads_to(&via, cause, effect)
            })
        });
    }

    // Each explained item's root: the end of its chain.
    let root_of = |mut id: usize| {
        while let Some(next) = via[id] {
            id = next;
        }
        id
    };
    let mut explained = vec![None; items.len()];
    let mut explains: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, direct) in via[first_item..].iter().enumerate() {
        if let Some(direct) = *direct {
            let root = root_of(direct);
            explained[i] = Some(Explained {
                root: world.nodes[root].name.clone(),
                via: world.nodes[direct].name.clone(),
            });
            explains.entry(root).or_default().push(i);
        }
    }
    let mut roots = Vec::new();
    for (id, n) in world.nodes.iter().enumerate() {
        let explains = explains.remove(&id).unwrap_or_default();
        // A cluster is a root cause only while it explains something; an item whenever it is bad.
        let root = match n.item {
            None => !explains.is_empty(),
            Some(_) => via[id].is_none() && n.bad(),
        };
        if root {
            roots.push(RootCause {
                name: n.name.clone(),
                item: n.item,
                status: n.status,
                message: n.message.to_string(),
                since: n.since.seen_from(now).wall,
                explains,
            });
        }
    }
    (
        explained,
        Causes {
            roots,
            clusters: cluster_names,
        },
    )
}

/// Whether following direct causes from `from` reaches `target` (a rule would close a loop).
fn leads_to(via: &[Option<usize>], mut from: usize, target: usize) -> bool {
    for _ in 0..via.len() {
        if from == target {
            return true;
        }
        match via[from] {
            Some(next) => from = next,
            None => return false,
        }
    }
    true
}
