//! What the scale bench seeds: N managed resources of provider-anynines' four kinds, split as a busy platform
//! holds them, each in a state a real one shows, served by the simulated estate's ProviderConfigs, and which of
//! them the churn flips. A pure function of N (the same objects every run), so that it can be tested and the
//! counts klutch-health reports can be checked against it.
//!
//! - Split: 40 % ServiceInstances, 30 % ServiceBindings (each of an instance), 25 % Backups (three per
//!   instance, nightly: only the newest of each instance is judged, the other two are superseded), 5 % Restores
//!   (each of its own backup).
//! - States per 1 000 of a kind: 5 failing (`Synced=False ReconcileError`: one tenant's bad request, under the
//!   thresholds, so the kinds warn), 10 creating, 1 paused, 1 deleting (a finalizer holds it), 2 with a broker
//!   operation pending (ServiceInstances; ready for the others), the rest ready.
//! - ServiceInstances and ServiceBindings name the broker `postgresql-service-broker`, Backups and Restores the
//!   backup manager `postgresql-backup-manager`: the estate's two ProviderConfigs.

use klutch_sim::managed::{managed_object, set_state, ManagedKind, ManagedState};
use serde_json::{json, Value};

/// Per kind, in [`ManagedKind::ALL`]'s order: how many of each there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Split(pub [usize; 4]);

/// Percent of the total per kind, in [`ManagedKind::ALL`]'s order (the last takes the rest).
const SHARES: [usize; 4] = [40, 30, 25, 5];

/// Backups kept per instance: a nightly schedule keeping three.
pub const BACKUPS_PER_INSTANCE: usize = 3;

impl Split {
    pub fn of(total: usize) -> Split {
        let mut counts = [0; 4];
        for (c, share) in counts.iter_mut().zip(SHARES).take(3) {
            *c = total * share / 100;
        }
        counts[3] = total - counts[..3].iter().sum::<usize>();
        Split(counts)
    }

    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    pub fn count(&self, kind: ManagedKind) -> usize {
        self.0[slot(kind)]
    }

    /// "20 000 ServiceInstances, 15 000 ServiceBindings, …" for the bench's table.
    pub fn words(&self) -> String {
        ManagedKind::ALL
            .iter()
            .map(|k| format!("{} {}", self.count(*k), k.kind()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn slot(kind: ManagedKind) -> usize {
    ManagedKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("one of ALL")
}

/// `si-000042`: names sort in creation order within a kind.
pub fn name(kind: ManagedKind, index: usize) -> String {
    let prefix = match kind {
        ManagedKind::ServiceInstance => "si",
        ManagedKind::ServiceBinding => "sb",
        ManagedKind::Backup => "bk",
        ManagedKind::Restore => "rs",
    };
    format!("{prefix}-{index:06}")
}

/// The state resource `index` of `kind` is seeded in.
pub fn state_of(kind: ManagedKind, index: usize) -> ManagedState {
    match index % 1000 {
        0..=4 => ManagedState::Failing,
        5..=14 => ManagedState::Creating,
        15 => ManagedState::Paused,
        16 => ManagedState::Deleting,
        17..=18 if kind == ManagedKind::ServiceInstance => ManagedState::Pending,
        _ => ManagedState::Ready,
    }
}

/// The object as it should end up in the API server: metadata, spec and status, in its state.
pub fn object(kind: ManagedKind, index: usize) -> Value {
    let mut obj = managed_object(kind, &name(kind, index), kind.default_provider_config());
    match kind {
        ManagedKind::ServiceInstance => {
            obj["metadata"]["annotations"] =
                json!({"crossplane.io/external-name": name(kind, index)});
        }
        ManagedKind::ServiceBinding => {
            obj["spec"]["forProvider"]["instanceName"] =
                json!(name(ManagedKind::ServiceInstance, index));
        }
        ManagedKind::Backup => {
            obj["spec"]["forProvider"]["instanceName"] = json!(name(
                ManagedKind::ServiceInstance,
                index / BACKUPS_PER_INSTANCE
            ));
        }
        ManagedKind::Restore => {
            obj["spec"]["forProvider"]["backupName"] = json!(name(ManagedKind::Backup, index * 5));
        }
    }
    set_state(&mut obj, state_of(kind, index));
    obj
}

/// Whether the resource is judged once `split` is seeded: every one but the older Backups of an instance.
pub fn judged(split: &Split, kind: ManagedKind, index: usize) -> bool {
    if kind != ManagedKind::Backup {
        return true;
    }
    let last_of_group = (index / BACKUPS_PER_INSTANCE + 1) * BACKUPS_PER_INSTANCE - 1;
    index == last_of_group.min(split.count(kind) - 1)
}

/// What seeding one step creates, in units created one object after the other (the Backups of one instance,
/// oldest first, so that their creation times order them as their names do); the units themselves go in
/// parallel. From the split `from` (already seeded) up to `to`.
pub fn units(from: &Split, to: &Split) -> Vec<Vec<(ManagedKind, usize)>> {
    let mut units = Vec::new();
    for kind in ManagedKind::ALL {
        let range = from.count(kind)..to.count(kind);
        if kind == ManagedKind::Backup {
            let mut group: Vec<(ManagedKind, usize)> = Vec::new();
            for i in range {
                if let Some((_, last)) = group.last() {
                    if last / BACKUPS_PER_INSTANCE != i / BACKUPS_PER_INSTANCE {
                        units.push(std::mem::take(&mut group));
                    }
                }
                group.push((kind, i));
            }
            if !group.is_empty() {
                units.push(group);
            }
        } else {
            units.extend(range.map(|i| vec![(kind, i)]));
        }
    }
    units
}

/// The resources the churn flips from ready to failing and back: ready and judged once `split` is seeded,
/// taken round-robin across the kinds so that every kind's watch carries its share.
pub fn churn_candidates(split: &Split, n: usize) -> Vec<(ManagedKind, usize)> {
    let mut per_kind: Vec<Vec<(ManagedKind, usize)>> = ManagedKind::ALL
        .iter()
        .map(|&k| {
            (0..split.count(k))
                .filter(|&i| state_of(k, i) == ManagedState::Ready && judged(split, k, i))
                .map(|i| (k, i))
                .collect()
        })
        .collect();
    // Weighted round-robin by each kind's size: pick from the kind furthest behind its share.
    let sizes: Vec<usize> = per_kind.iter().map(Vec::len).collect();
    let total: usize = sizes.iter().sum();
    let mut taken = [0usize; 4];
    let mut out = Vec::with_capacity(n.min(total));
    for _ in 0..n.min(total) {
        let k = (0..4)
            .filter(|&k| taken[k] < sizes[k])
            .min_by(|&a, &b| {
                let share = |k: usize| taken[k] as f64 / sizes[k] as f64;
                share(a).total_cmp(&share(b))
            })
            .expect("some kind has candidates left");
        out.push(per_kind[k][taken[k]]);
        taken[k] += 1;
    }
    for v in &mut per_kind {
        v.clear();
    }
    out
}

/// The churn's three sets at the largest size, each broken then healed at `rate` for `seconds` in all: the
/// quiet phase (nothing polled: CPU per change), klutch-health polled alone, then both tools polled. No
/// resource is in two sets, so every change of a phase is a real change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnSets {
    pub quiet: Vec<(ManagedKind, usize)>,
    pub alone: Vec<(ManagedKind, usize)>,
    pub side: Vec<(ManagedKind, usize)>,
}

impl ChurnSets {
    pub fn of(split: &Split, rate: u32, seconds: u64) -> anyhow::Result<ChurnSets> {
        // Half the phase breaks, half heals the same resources.
        let per_set = ((u64::from(rate) * seconds / 2) as usize).max(1);
        let mut all = churn_candidates(split, 3 * per_set);
        anyhow::ensure!(
            all.len() == 3 * per_set,
            "only {} resources can be flipped at {} managed resources; {rate} changes/s for {seconds} s need {} \
             (lower --churn-seconds or --rate)",
            all.len(),
            split.total(),
            3 * per_set
        );
        let side = all.split_off(2 * per_set);
        let alone = all.split_off(per_set);
        Ok(ChurnSets {
            quiet: all,
            alone,
            side,
        })
    }

    /// The resource broken after the API server's restart: ready, judged, and in no churn set whatever
    /// the churn's length (the last candidate of all).
    pub fn relist_probe(split: &Split) -> anyhow::Result<(ManagedKind, usize)> {
        churn_candidates(split, split.total()).pop().ok_or_else(|| {
            anyhow::anyhow!(
                "no ready resource to break at {} managed resources",
                split.total()
            )
        })
    }
}

/// The status of resource `(kind, index)` broken (`Synced=False ReconcileError`, as a failing broker writes
/// it) or healed (ready): the body of a merge patch of its `/status`.
pub fn flipped_status(kind: ManagedKind, index: usize, broken: bool) -> Value {
    let mut obj = object(kind, index);
    set_state(
        &mut obj,
        if broken {
            ManagedState::Failing
        } else {
            ManagedState::Ready
        },
    );
    json!({"status": obj["status"]})
}

/// The midnight backup storm: Backups created, moved through their states and completed within a few seconds
/// each, their starts spread evenly over the storm's length. Each one is the first Backup of a ready
/// ServiceInstance that had none (the seeded Backups cover the first instances only), so every one is judged
/// and none supersedes another: the Backups' ready count rises by exactly one per completed Backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormBackup {
    /// Its place in the storm (0-based, in order of start).
    pub index: usize,
    /// The ServiceInstance it backs up.
    pub instance: usize,
    /// Milliseconds from the storm's start: created (and `queued` written), `running` written, and the final
    /// status (`done`, or failed) written.
    pub start_ms: u64,
    pub running_ms: u64,
    pub final_ms: u64,
    /// Ends failed (`Synced=False ReconcileError`) instead of done.
    pub fails: bool,
}

/// One status write of a storm Backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormStep {
    /// Accepted by the a9s Backup Manager: `Ready=False Creating`, `Synced=True`.
    Queued,
    /// Running: still `Ready=False Creating`, with a message saying so.
    Running,
    /// Completed: `Ready=True Available`, `Synced=True`.
    Done,
    /// Failed: `Synced=False ReconcileError`.
    Failed,
}

/// One Backup in this many ends failed (0.5 %).
pub const STORM_FAIL_EVERY: usize = 200;
/// From `queued` to `running`, and the shortest run (a small database's backup takes seconds).
pub const STORM_QUEUED_MS: u64 = 2_000;
pub const STORM_RUN_MS: u64 = 3_000;
/// Runs last from [`STORM_RUN_MS`] to this much longer, spread deterministically over the Backups.
pub const STORM_RUN_SPREAD_MS: u64 = 2_000;
/// The longest a Backup takes from creation to its final status.
pub const STORM_LIFETIME_MS: u64 = STORM_QUEUED_MS + STORM_RUN_MS + STORM_RUN_SPREAD_MS;

/// The instances the storm backs up: ready ServiceInstances with no seeded Backup, in order.
pub fn storm_instances(split: &Split) -> impl Iterator<Item = usize> {
    let first_free = split
        .count(ManagedKind::Backup)
        .div_ceil(BACKUPS_PER_INSTANCE);
    (first_free..split.count(ManagedKind::ServiceInstance))
        .filter(|&i| state_of(ManagedKind::ServiceInstance, i) == ManagedState::Ready)
}

/// The storm of `backups` Backups within `seconds` once `split` is seeded: their starts evenly spaced over the
/// first `seconds - STORM_LIFETIME_MS`, so that the last one has its final status by `seconds`.
pub fn storm(split: &Split, backups: usize, seconds: u64) -> anyhow::Result<Vec<StormBackup>> {
    let span_ms = (seconds * 1000).checked_sub(STORM_LIFETIME_MS).ok_or_else(|| {
        anyhow::anyhow!(
            "a storm of {seconds} s is shorter than one Backup's life ({} s): raise --storm-seconds",
            STORM_LIFETIME_MS / 1000
        )
    })?;
    let instances: Vec<usize> = storm_instances(split).take(backups).collect();
    anyhow::ensure!(
        instances.len() == backups,
        "only {} ServiceInstances without a Backup at {} managed resources; a storm of {backups} Backups needs \
         as many (lower --storm-backups)",
        instances.len(),
        split.total()
    );
    Ok(instances
        .into_iter()
        .enumerate()
        .map(|(index, instance)| {
            let start_ms = index as u64 * span_ms / backups as u64;
            let running_ms = start_ms + STORM_QUEUED_MS;
            // A spread that looks random but is the same every run.
            let run = STORM_RUN_MS + (index as u64 * 7919) % (STORM_RUN_SPREAD_MS + 1);
            StormBackup {
                index,
                instance,
                start_ms,
                running_ms,
                final_ms: running_ms + run,
                fails: index % STORM_FAIL_EVERY == STORM_FAIL_EVERY - 1,
            }
        })
        .collect())
}

impl StormBackup {
    /// `si-012345-nightly`: one per instance, named after it.
    pub fn name(&self) -> String {
        format!(
            "{}-nightly",
            name(ManagedKind::ServiceInstance, self.instance)
        )
    }

    /// The Backup as created: no status yet (a claim's composition writes only metadata and spec).
    pub fn object(&self) -> Value {
        let mut obj = managed_object(
            ManagedKind::Backup,
            &self.name(),
            ManagedKind::Backup.default_provider_config(),
        );
        obj["spec"]["forProvider"]["instanceName"] =
            json!(name(ManagedKind::ServiceInstance, self.instance));
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove("generation");
        }
        obj
    }

    /// The steps written to its `/status`, in order, each with its time from the storm's start.
    pub fn steps(&self) -> [(StormStep, u64); 3] {
        [
            (StormStep::Queued, self.start_ms),
            (StormStep::Running, self.running_ms),
            (
                if self.fails {
                    StormStep::Failed
                } else {
                    StormStep::Done
                },
                self.final_ms,
            ),
        ]
    }

    /// The body of the merge patch of its `/status` at `step`, written at `now` (RFC 3339) as
    /// provider-anynines writes it: the a9s Backup Manager's view in `atProvider`, the two conditions.
    pub fn status(&self, step: StormStep, now: &str) -> Value {
        let id = 100_000 + self.index as u64;
        let cond = |type_: &str, status: &str, reason: &str, message: &str| {
            let mut c = json!({"type": type_, "status": status, "reason": reason,
                               "lastTransitionTime": now, "observedGeneration": 1});
            if !message.is_empty() {
                c["message"] = json!(message);
            }
            c
        };
        let synced_ok = cond("Synced", "True", "ReconcileSuccess", "");
        let (status, conditions) = match step {
            StormStep::Queued => (
                "queued",
                vec![cond("Ready", "False", "Creating", ""), synced_ok],
            ),
            StormStep::Running => (
                "running",
                vec![
                    cond(
                        "Ready",
                        "False",
                        "Creating",
                        &format!("backup {id} is running"),
                    ),
                    synced_ok,
                ],
            ),
            StormStep::Done => (
                "done",
                vec![cond("Ready", "True", "Available", ""), synced_ok],
            ),
            StormStep::Failed => (
                "failed",
                vec![
                    cond(
                        "Ready",
                        "False",
                        "Creating",
                        &format!("backup {id} is running"),
                    ),
                    cond(
                        "Synced",
                        "False",
                        "ReconcileError",
                        &format!("observe failed: backup {id} failed in the a9s Backup Manager"),
                    ),
                ],
            ),
        };
        // A merge patch keeps the fields it does not name: `triggered_at` is written once, when queued.
        let mut at_provider = json!({"id": id, "instanceId": name(ManagedKind::ServiceInstance, self.instance),
                                     "status": status});
        if step == StormStep::Queued {
            at_provider["triggered_at"] = json!(now);
        }
        if matches!(step, StormStep::Done | StormStep::Failed) {
            at_provider["finished_at"] = json!(now);
        }
        if step == StormStep::Done {
            at_provider["size"] = json!(1_048_576 + self.index as u64 * 4096);
            at_provider["downloadable"] = json!(true);
        }
        json!({"status": {"atProvider": at_provider, "conditions": conditions}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_split_adds_up_and_grows_with_the_total() {
        for n in [0, 1, 7, 1000, 10_000, 50_000] {
            assert_eq!(Split::of(n).total(), n);
        }
        assert_eq!(Split::of(50_000), Split([20_000, 15_000, 12_500, 2_500]));
        assert_eq!(
            Split::of(1000).words(),
            "400 ServiceInstance, 300 ServiceBinding, 250 Backup, 50 Restore"
        );
        // Seeding step by step creates each object once.
        let steps = [
            Split::default(),
            Split::of(1000),
            Split::of(10_000),
            Split::of(50_000),
        ];
        let mut seen = HashSet::new();
        for w in steps.windows(2) {
            for unit in units(&w[0], &w[1]) {
                for (k, i) in unit {
                    assert!(seen.insert((k, i)), "{k:?} {i} twice");
                }
            }
        }
        assert_eq!(seen.len(), 50_000);
    }

    #[test]
    fn backups_come_three_per_instance_oldest_first_and_only_the_newest_is_judged() {
        let split = Split::of(1000);
        let us = units(&Split::default(), &split);
        let backups: Vec<_> = us
            .iter()
            .filter(|u| u[0].0 == ManagedKind::Backup)
            .collect();
        assert_eq!(
            backups[0],
            &vec![
                (ManagedKind::Backup, 0),
                (ManagedKind::Backup, 1),
                (ManagedKind::Backup, 2)
            ]
        );
        // 250 backups: 83 full groups and one of a single backup.
        assert_eq!(backups.len(), 84);
        assert_eq!(backups[83], &vec![(ManagedKind::Backup, 249)]);
        let judged_backups = (0..250)
            .filter(|&i| judged(&split, ManagedKind::Backup, i))
            .count();
        assert_eq!(judged_backups, 84);
        assert!(judged(&split, ManagedKind::Backup, 2) && !judged(&split, ManagedKind::Backup, 1));
        assert!(judged(&split, ManagedKind::Backup, 249));
        // Grown on: 249 is no longer the newest of its instance.
        assert!(!judged(&Split::of(10_000), ManagedKind::Backup, 249));
        // Every reference names an object that exists once the split is seeded.
        let si = |v: &Value| {
            v["spec"]["forProvider"]["instanceName"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let last_instance = name(
            ManagedKind::ServiceInstance,
            split.count(ManagedKind::ServiceInstance) - 1,
        );
        assert!(si(&object(ManagedKind::Backup, 249)) <= last_instance);
        assert!(si(&object(ManagedKind::ServiceBinding, 299)) <= last_instance);
        let backup = object(ManagedKind::Restore, 49)["spec"]["forProvider"]["backupName"].clone();
        assert!(backup.as_str().unwrap() <= name(ManagedKind::Backup, 249).as_str());
    }

    #[test]
    fn states_are_those_of_a_busy_platform_and_under_the_thresholds() {
        let split = Split::of(50_000);
        for kind in ManagedKind::ALL {
            let n = split.count(kind);
            let failing = (0..n)
                .filter(|&i| state_of(kind, i) == ManagedState::Failing)
                .count();
            // One ProviderConfig per kind: under fail_share (10 %), so the kind warns and never fails.
            assert!(failing * 10 < n, "{kind:?}: {failing} of {n}");
            assert!(failing >= 3, "{kind:?}: a few failing at every size");
        }
        assert_eq!(
            state_of(ManagedKind::ServiceInstance, 17),
            ManagedState::Pending
        );
        assert_eq!(state_of(ManagedKind::Backup, 17), ManagedState::Ready);
        let o = object(ManagedKind::ServiceInstance, 1);
        assert_eq!(o["metadata"]["name"], "si-000001");
        assert_eq!(
            o["spec"]["providerConfigRef"]["name"],
            "postgresql-service-broker"
        );
        let synced = o["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Synced")
            .unwrap();
        assert_eq!(synced["reason"], "ReconcileError");
        assert_eq!(
            object(ManagedKind::Restore, 0)["spec"]["providerConfigRef"]["name"],
            "postgresql-backup-manager"
        );
    }

    #[test]
    fn the_churn_sets_are_disjoint_and_a_phase_long_each() {
        let sets = ChurnSets::of(&Split::of(50_000), 100, 20).unwrap();
        // 100 changes/s for 20 s: 1 000 broken, then the same 1 000 healed.
        assert_eq!(
            (sets.quiet.len(), sets.alone.len(), sets.side.len()),
            (1000, 1000, 1000)
        );
        let all: HashSet<_> = sets
            .quiet
            .iter()
            .chain(&sets.alone)
            .chain(&sets.side)
            .collect();
        assert_eq!(all.len(), 3000, "no resource in two sets");
        let err = ChurnSets::of(&Split::of(1000), 100, 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("need 3000"), "{err}");
        assert_eq!(
            ChurnSets::of(&Split::of(1000), 100, 2).unwrap().side.len(),
            100
        );
        let probe = ChurnSets::relist_probe(&Split::of(50_000)).unwrap();
        assert!(!all.contains(&probe), "the relist's change is a change");
        assert_eq!(state_of(probe.0, probe.1), ManagedState::Ready);
        assert!(ChurnSets::relist_probe(&Split::default()).is_err());
    }

    #[test]
    fn churn_flips_ready_judged_resources_of_every_kind_once() {
        let split = Split::of(50_000);
        let picked = churn_candidates(&split, 4000);
        assert_eq!(picked.len(), 4000);
        assert_eq!(
            picked.iter().collect::<HashSet<_>>().len(),
            4000,
            "each once"
        );
        for &(k, i) in &picked {
            assert_eq!(state_of(k, i), ManagedState::Ready);
            assert!(judged(&split, k, i));
        }
        for kind in ManagedKind::ALL {
            assert!(
                picked.iter().filter(|(k, _)| *k == kind).count() > 50,
                "{kind:?}"
            );
        }
        let broken = flipped_status(ManagedKind::Backup, 2, true);
        assert!(broken["status"]["conditions"]
            .to_string()
            .contains("ReconcileError"));
        let healed = flipped_status(ManagedKind::Backup, 2, false);
        assert!(healed["status"]["conditions"]
            .to_string()
            .contains("ReconcileSuccess"));
        assert!(broken.get("metadata").is_none(), "only the status");
    }

    #[test]
    fn the_storm_backs_up_instances_without_a_backup_within_its_length() {
        let split = Split::of(50_000);
        let storm = storm(&split, 10_000, 60).unwrap();
        assert_eq!(storm.len(), 10_000);
        // 12 500 seeded Backups cover instances 0..=4166: the storm starts after them, one Backup each.
        assert_eq!(storm[0].instance, 4167);
        let instances: HashSet<_> = storm.iter().map(|b| b.instance).collect();
        assert_eq!(instances.len(), 10_000, "one Backup per instance");
        let backed_up: HashSet<String> = (0..split.count(ManagedKind::Backup))
            .map(|i| {
                object(ManagedKind::Backup, i)["spec"]["forProvider"]["instanceName"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for b in &storm {
            assert!(b.instance < split.count(ManagedKind::ServiceInstance));
            assert_eq!(
                state_of(ManagedKind::ServiceInstance, b.instance),
                ManagedState::Ready
            );
            assert!(
                !backed_up.contains(&name(ManagedKind::ServiceInstance, b.instance)),
                "{b:?}: a seeded Backup has its instance"
            );
            // Steps a few seconds apart, in order, all within the storm.
            assert_eq!(b.running_ms - b.start_ms, STORM_QUEUED_MS);
            assert!((STORM_RUN_MS..=STORM_RUN_MS + STORM_RUN_SPREAD_MS)
                .contains(&(b.final_ms - b.running_ms)));
            assert!(b.final_ms <= 60_000, "{b:?}");
        }
        // A steady pace: about 185 started per second over the first 53 s.
        let first_second = storm.iter().filter(|b| b.start_ms < 1000).count();
        assert!((180..=190).contains(&first_second), "{first_second}");
        assert_eq!(storm.last().unwrap().start_ms, 9999 * 53_000 / 10_000);
        // 0.5 % end failed.
        assert_eq!(storm.iter().filter(|b| b.fails).count(), 50);
        assert_eq!(
            super::storm(&split, 10_000, 60).unwrap(),
            storm,
            "the same every run"
        );
        // Too many for the instances without a Backup, or too short for one Backup's life.
        let err = super::storm(&Split::of(2000), 1000, 60)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a storm of 1000 Backups"), "{err}");
        assert!(super::storm(&Split::of(2000), 400, 15).is_ok());
        assert!(super::storm(&Split::of(2000), 400, 6).is_err());
    }

    #[test]
    fn a_storm_backup_goes_through_the_states_a_real_one_shows() {
        let split = Split::of(2000);
        let storm = storm(&split, 400, 15).unwrap();
        let b = storm[0];
        assert_eq!(b.name(), "si-000167-nightly");
        let created = b.object();
        assert_eq!(created["kind"], "Backup");
        assert_eq!(created["metadata"]["name"], "si-000167-nightly");
        assert_eq!(created["spec"]["forProvider"]["instanceName"], "si-000167");
        assert_eq!(
            created["spec"]["providerConfigRef"]["name"],
            "postgresql-backup-manager"
        );
        assert!(created.get("status").is_none(), "created without a status");
        let cond = |v: &Value, t: &str| {
            let c = v["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()
                .clone();
            (
                c["status"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        };
        let now = "2026-12-08T00:00:01Z";
        let steps: Vec<StormStep> = b.steps().iter().map(|(s, _)| *s).collect();
        assert_eq!(
            steps,
            [StormStep::Queued, StormStep::Running, StormStep::Done]
        );
        let queued = b.status(StormStep::Queued, now);
        assert_eq!(cond(&queued, "Ready"), ("False".into(), "Creating".into()));
        assert_eq!(
            cond(&queued, "Synced"),
            ("True".into(), "ReconcileSuccess".into())
        );
        assert_eq!(queued["status"]["atProvider"]["status"], "queued");
        assert_eq!(queued["status"]["atProvider"]["triggered_at"], now);
        let running = b.status(StormStep::Running, now);
        assert_eq!(cond(&running, "Ready"), ("False".into(), "Creating".into()));
        assert!(running["status"]["conditions"]
            .to_string()
            .contains("backup 100000 is running"));
        assert!(
            running["status"]["atProvider"]
                .get("triggered_at")
                .is_none(),
            "kept from when it was queued"
        );
        let done = b.status(StormStep::Done, now);
        assert_eq!(cond(&done, "Ready"), ("True".into(), "Available".into()));
        assert_eq!(
            cond(&done, "Synced"),
            ("True".into(), "ReconcileSuccess".into())
        );
        assert_eq!(done["status"]["atProvider"]["status"], "done");
        assert_eq!(done["status"]["atProvider"]["finished_at"], now);
        let failing = storm.iter().find(|b| b.fails).unwrap();
        assert_eq!(failing.index, STORM_FAIL_EVERY - 1);
        assert_eq!(failing.steps()[2].0, StormStep::Failed);
        let failed = failing.status(StormStep::Failed, now);
        assert_eq!(
            cond(&failed, "Synced"),
            ("False".into(), "ReconcileError".into())
        );
        assert_eq!(failed["status"]["atProvider"]["status"], "failed");
        assert!(failed.get("metadata").is_none(), "only the status");
    }
}
