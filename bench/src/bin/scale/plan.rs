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
}
