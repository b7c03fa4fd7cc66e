//! The policy: from what the signals observed, the configuration and the current time, to each endpoint's
//! verdict. [`evaluate`] is a pure function — state that must outlive one evaluation (when an item's status
//! changed, how long it has been failing) goes in and comes out as [`Memory`] — so every rule is table-tested
//! with a hand-set clock. Durations (damping, how long a status held) are measured on the monotonic clock of
//! the [`Moment`] passed in, so a step of the wall clock never shortens or lengthens them; silences and the
//! maintenance window, timestamps an operator wrote, are judged by its wall clock.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::{Instant, Moment};
use crate::config::{self, Require, UnknownAs};
use crate::verdict::operations::Operations;

use crate::signals::{Fact, Observation, Snapshot};
use crate::verdict::causes::Observed;
use crate::verdict::links;
use crate::verdict::report::{
    Causes, Counted, Endpoint, EndpointReport, Item, ItemName, Notes, OperatorKind, OperatorNote,
    Report, Served, Status,
};

/// One endpoint's policy as evaluation applies it: the configuration's [`config::EndpointPolicy`] (its
/// patterns compiled once), with the rules that read it here rather than on the configuration type.
#[derive(Debug, Clone)]
struct EndpointRules(config::EndpointPolicy);

impl std::ops::Deref for EndpointRules {
    type Target = config::EndpointPolicy;
    fn deref(&self) -> &config::EndpointPolicy {
        &self.0
    }
}

impl EndpointRules {
    fn includes(&self, check: &str, item: &str) -> bool {
        self.include.matches(check, item) && !self.exclude.matches(check, item)
    }

    /// How the endpoint counts an item's status, before damping.
    fn target(&self, check: &str, item: &str, status: Status) -> Status {
        let counted = match (status, self.unknown) {
            (Status::Unknown, UnknownAs::Fail) => Status::Fail,
            (Status::Unknown, UnknownAs::Warn) => Status::Warn,
            (Status::Unknown, UnknownAs::Pass) => Status::Pass,
            (s, _) => s,
        };
        if counted == Status::Fail && self.warn_only.matches(check, item) {
            Status::Warn
        } else {
            counted
        }
    }
}

#[derive(Debug, Clone)]
struct CheckRules {
    name: Arc<str>,
    type_name: &'static str,
    require: Require,
    /// Whether failing items take the message of the same-named item of a provider-config check.
    annotate_from_provider_configs: bool,
    /// The `crossplane-package` item whose runtime the check watches (its `package` key).
    package: Option<ItemName>,
    /// The cluster it watches (`Some(None)`: the default one); `None`: it watches no cluster.
    cluster: Option<Option<String>>,
}

/// The configuration, compiled once for repeated evaluation.
#[derive(Debug, Clone)]
pub struct Rules {
    checks: Vec<CheckRules>,
    provider_config_checks: Vec<Arc<str>>,
    healthz: EndpointRules,
    readyz: EndpointRules,
    /// Silences and the maintenance window.
    operations: Operations,
    /// The `backend-status` check whose poll `/backend-health` serves.
    passthrough: Option<Arc<str>>,
}

impl Rules {
    pub fn new(config: &config::Config) -> Rules {
        Rules {
            checks: config
                .checks
                .iter()
                .map(|c| CheckRules {
                    name: c.name.as_str().into(),
                    type_name: c.type_name(),
                    require: c.require,
                    annotate_from_provider_configs: links::annotated_by_provider_configs(
                        c.type_name(),
                    ),
                    package: c.package.clone(),
                    cluster: (!c.settings.targets().is_empty()).then(|| c.cluster.clone()),
                })
                .collect(),
            provider_config_checks: config
                .checks
                .iter()
                .filter(|c| links::provider_configs(c.type_name()))
                .map(|c| c.name.as_str().into())
                .collect(),
            healthz: EndpointRules(config.endpoints.healthz.clone()),
            readyz: EndpointRules(config.endpoints.readyz.clone()),
            operations: Operations::new(&config.silences, config.maintenance.as_ref()),
            passthrough: config.passthrough().map(Into::into),
        }
    }

    /// The silences in force that match no item of `report`.
    pub(crate) fn silences_matching_nothing(&self, report: &Report) -> Vec<&config::Silence> {
        let items: Vec<(&str, &str)> = report
            .items
            .iter()
            .map(|i| (i.name.check(), i.name.as_str()))
            .collect();
        self.operations
            .matching_nothing(&items, report.evaluated.wall)
    }

    pub(crate) fn has_check(&self, name: &str) -> bool {
        self.checks.iter().any(|c| &*c.name == name)
    }

    fn endpoint(&self, e: Endpoint) -> &EndpointRules {
        match e {
            Endpoint::Healthz => &self.healthz,
            Endpoint::Readyz => &self.readyz,
        }
    }
}

/// What one evaluation remembers for the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// Item name → its observed status and when that status began.
    observed: HashMap<ItemName, (Status, Moment)>,
    /// Per endpoint (indexed by [`Endpoint::index`]): flap damping of each item.
    damping: [HashMap<ItemName, Damping>; 2],
    /// Per endpoint: the status each item was shown with, and since when.
    shown: [HashMap<ItemName, (Status, Moment)>; 2],
}

/// An item's flap-damping state on one endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Damping {
    /// Whether the endpoint counts the item as failing.
    counted_fail: bool,
    /// Whether the item's current status would count as failing, were it not for damping.
    target_fail: bool,
    /// When `target_fail` last changed (its monotonic instant is what counts).
    switched_at: Moment,
}

/// The result of one evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub report: Report,
    pub memory: Memory,
    /// When the verdict may change without any new observation (damping timer, an expiring observation, a
    /// silence or window that starts or ends), on the monotonic clock.
    pub next: Option<Instant>,
}

/// Evaluates every endpoint's policy over the latest observations at `now`.
pub fn evaluate(rules: &Rules, snapshot: &Snapshot, memory: &Memory, now: Moment) -> Evaluation {
    let mut next = Wakeup::default();
    for t in rules.operations.changes() {
        if t > now.wall {
            next.at(now.instant_of(t), now);
        }
    }
    let mut new_memory = Memory::default();
    let (mut items, seen) =
        observed_items(rules, snapshot, memory, &mut new_memory, &mut next, now);
    let causes = explain_items(rules, snapshot, &mut items, &seen, now);

    let mut endpoint =
        |e| evaluate_endpoint(rules, e, &items, memory, &mut new_memory, &mut next, now);
    let healthz = endpoint(Endpoint::Healthz);
    let readyz = endpoint(Endpoint::Readyz);
    Evaluation {
        report: Report {
            evaluated: now,
            items,
            healthz,
            readyz,
            backend: rules.passthrough.as_ref().map(|check| Served {
                check: check.clone(),
                last: snapshot.polls.get(&**check).cloned(),
            }),
            operating: rules.operations.state(now.wall),
            causes,
        },
        memory: new_memory,
        next: next.0,
    }
}

/// The earliest future instant at which something changes by itself.
#[derive(Default)]
struct Wakeup(Option<Instant>);

impl Wakeup {
    fn at(&mut self, t: Instant, now: Moment) {
        if t > now.mono && self.0.is_none_or(|n| t < n) {
            self.0 = Some(t);
        }
    }
}

/// What the root-cause rules read of an item beside the item itself.
struct Seen {
    /// Index into [`Rules::checks`].
    check: usize,
    /// When its observed status began.
    since: Moment,
    fact: Option<Fact>,
}

/// Every configured check's items as observed, with expiries applied and cross-check messages added, and
/// what the root-cause rules read of each.
fn observed_items(
    rules: &Rules,
    snapshot: &Snapshot,
    memory: &Memory,
    new_memory: &mut Memory,
    next: &mut Wakeup,
    now: Moment,
) -> (Vec<Item>, Vec<Seen>) {
    let mut items = Vec::new();
    let mut seen = Vec::new();
    for (check_index, check) in rules.checks.iter().enumerate() {
        let waiting;
        let observations: &[Observation] = match snapshot.checks.get(&*check.name) {
            Some(o) => o,
            None => {
                waiting = [Observation::new(
                    crate::reserved::PENDING,
                    Status::Unknown,
                    "no observation yet",
                    now.wall,
                )];
                &waiting
            }
        };
        let mut sorted: Vec<&Observation> = observations.iter().collect();
        sorted.sort_by(|a, b| a.item.cmp(&b.item));
        for obs in sorted {
            for e in &obs.expires {
                next.at(e.at.instant(now), now);
            }
            let (mut status, message) = obs.at(now);
            let mut message = message.to_string();
            let mut detail = obs.detail.clone().filter(|_| obs.expired(now).is_none());
            if check.annotate_from_provider_configs && status == Status::Fail {
                if let Some(detail) = links::provider_config_message(
                    &rules.provider_config_checks,
                    snapshot,
                    &obs.item,
                    now,
                ) {
                    message = format!("{message}: {detail}");
                }
            }
            if let Some(passes) =
                links::none_should_run(snapshot, check.package.as_ref(), obs, status, now)
            {
                status = Status::Pass;
                message = passes;
                detail = Some(message.clone());
            }
            let name = ItemName::new(&check.name, &obs.item);
            let since = match memory.observed.get(&name) {
                Some((s, since)) if *s == status => since.seen_from(now),
                _ => now,
            };
            new_memory.observed.insert(name.clone(), (status, since));
            seen.push(Seen {
                check: check_index,
                since,
                fact: obs.fact_at(now),
            });
            items.push(Item {
                check_type: check.type_name,
                name,
                status,
                message,
                observed: obs.observed,
                since: since.wall,
                detail,
                counts: obs.counts.clone(),
                crossplane: obs.crossplane.clone(),
                cause: None,
            });
        }
    }
    (items, seen)
}

/// Sets each item's cause by the root-cause rules, over the items as observed (before any endpoint's
/// policy, so both endpoints name the same causes), and returns the root causes.
fn explain_items(
    rules: &Rules,
    snapshot: &Snapshot,
    items: &mut [Item],
    seen: &[Seen],
    now: Moment,
) -> Causes {
    let observed: Vec<Observed<'_>> = items
        .iter()
        .zip(seen)
        .map(|(item, s)| {
            let check = &rules.checks[s.check];
            Observed {
                item,
                since: s.since,
                fact: s.fact.clone(),
                package: check.package.as_ref(),
                cluster: check.cluster.as_ref().map(Option::as_deref),
            }
        })
        .collect();
    let (explained, causes) = crate::verdict::causes::explain(&observed, &snapshot.clusters, now);
    for (item, cause) in items.iter_mut().zip(explained) {
        item.cause = cause;
    }
    causes
}

fn evaluate_endpoint(
    rules: &Rules,
    endpoint: Endpoint,
    items: &[Item],
    memory: &Memory,
    new_memory: &mut Memory,
    next: &mut Wakeup,
    now: Moment,
) -> EndpointReport {
    let er = rules.endpoint(endpoint);
    let e = endpoint.index();
    let mut counted = Vec::new();
    if endpoint == Endpoint::Readyz {
        if let Some(m) = rules.operations.maintenance(now.wall) {
            counted.push(Counted {
                item: None,
                name: ItemName::new(
                    crate::reserved::MAINTENANCE.0,
                    crate::reserved::MAINTENANCE.1,
                ),
                status: Status::Fail,
                message: String::new(),
                notes: Notes {
                    operator: Some(OperatorNote {
                        kind: OperatorKind::Maintenance,
                        until: m.until,
                        reason: m.reason.clone(),
                    }),
                    ..Notes::default()
                },
                since: now.wall,
            });
        }
    }
    for check in &rules.checks {
        let first = counted.len();
        let mut total = 0;
        for (index, item) in items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.name.check() == &*check.name)
        {
            total += 1;
            if !er.includes(&check.name, &item.name) {
                continue;
            }
            let target = er.target(&check.name, &item.name, item.status);
            let (damping, status, damping_note) =
                damp(memory.damping[e].get(&item.name), target, er, next, now);
            new_memory.damping[e].insert(item.name.clone(), damping);
            // After damping, which keeps running underneath: when the silence ends, a long failure fails at once.
            let silence = (status == Status::Fail)
                .then(|| rules.operations.silence(&check.name, &item.name, now.wall))
                .flatten();
            let (status, operator) = match silence {
                Some(s) => (
                    Status::Warn,
                    Some(OperatorNote {
                        kind: OperatorKind::Silenced,
                        until: s.until,
                        reason: s.reason.clone(),
                    }),
                ),
                None => (status, None),
            };
            counted.push(Counted {
                item: Some(index),
                name: item.name.clone(),
                status,
                message: item.message.clone(),
                notes: Notes {
                    damping: damping_note,
                    require: None,
                    operator,
                },
                since: now.wall,
            });
        }
        // `require` judges the items the endpoint counts, however they were included (`a`, `a/*`, `a/x`);
        // a check without any item is judged when its `CHECK/require` item would be included.
        let judged = if total == 0 {
            er.includes(
                &check.name,
                &format!("{}/{}", check.name, crate::reserved::REQUIRE),
            )
        } else {
            counted.len() > first
        };
        if judged {
            apply_require(check, er, &mut counted, first, now);
        }
    }
    // `since` follows what the endpoint finally shows, after damping and `require`.
    for c in &mut counted {
        let since = match memory.shown[e].get(&c.name) {
            Some((status, since)) if *status == c.status => since.seen_from(now),
            _ => now,
        };
        c.since = since.wall;
        new_memory.shown[e].insert(c.name.clone(), (c.status, since));
    }
    EndpointReport {
        endpoint,
        items: counted,
    }
}

/// One damping step for one item: whether it now counts as failing, and what to show.
fn damp(
    previous: Option<&Damping>,
    target: Status,
    rules: &EndpointRules,
    next: &mut Wakeup,
    now: Moment,
) -> (Damping, Status, Option<String>) {
    let target_fail = target == Status::Fail;
    // Without history an item counts as having passed until now: a failure must last `fail_after` to count.
    let prev = previous.copied().unwrap_or(Damping {
        counted_fail: false,
        target_fail: false,
        switched_at: now,
    });
    let switched_at = if prev.target_fail == target_fail {
        prev.switched_at
    } else {
        now
    };
    let held = now.since(switched_at);
    let wait = if target_fail {
        rules.fail_after
    } else {
        rules.pass_after
    };
    let counted_fail = if prev.counted_fail == target_fail || held >= wait {
        target_fail
    } else {
        next.at(switched_at.after(wait).mono, now);
        prev.counted_fail
    };
    let (status, note) = match (counted_fail, target_fail) {
        (true, true) => (Status::Fail, None),
        (false, false) => (target, None),
        (false, true) => (
            Status::Warn,
            Some(format!(
                "failing for {}, counts as failed after {}",
                crate::human::duration(held),
                crate::human::duration(wait)
            )),
        ),
        (true, false) => (
            Status::Fail,
            Some(format!(
                "recovered {} ago, counts as passing after {}",
                crate::human::duration(held),
                crate::human::duration(wait),
            )),
        ),
    };
    let damping = Damping {
        counted_fail,
        target_fail,
        switched_at,
    };
    (damping, status, note)
}

/// Applies a check's `require` to its counted items `counted[first..]`: enough passing items excuse the
/// failing ones (shown as `warn`); too few items to ever meet it add a failing `CHECK/require` item.
fn apply_require(
    check: &CheckRules,
    rules: &EndpointRules,
    counted: &mut Vec<Counted>,
    first: usize,
    now: Moment,
) {
    let items = &mut counted[first..];
    let total = items.len();
    // A silenced item still fails here: one silence must not excuse the rest of a `require = "any"` check.
    let passing = items
        .iter()
        .filter(|c| c.status != Status::Fail && c.notes.operator.is_none())
        .count();
    let needed = match check.require {
        Require::All => total,
        Require::Any => 1,
        Require::AtLeast(n) => n,
    };
    if passing >= needed {
        if passing < total {
            for c in items.iter_mut().filter(|c| c.status == Status::Fail) {
                c.status = Status::Warn;
                c.notes.require = Some(format!("{passing} of {total} pass, {needed} required"));
            }
        }
    } else if total < needed {
        let name = ItemName::new(&check.name, crate::reserved::REQUIRE);
        let status = rules.target(&check.name, &name, Status::Fail);
        counted.push(Counted {
            item: None,
            name,
            status,
            message: format!("{total} items, {needed} required"),
            notes: Notes::default(),
            since: now.wall,
        });
    }
}
