//! Root causes, table-tested like the policy: the shipped configuration (its `package` links), observations
//! as the signals publish them (with their typed facts), a hand-set clock. Each rule has a case that breaks
//! the part and sees the cause named, and one where an unrelated failure at the same time is not blamed on
//! it (two independent faults: two root causes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use klutch_health::clock::Moment;
use klutch_health::config::Config;
use klutch_health::signals::{ClusterDown, Fact, NoAnswer, Observation, Snapshot};
use klutch_health::verdict::policy::{evaluate, Evaluation, Memory, Rules};
use klutch_health::verdict::report::{Report, Status};

const T0: &str = "2026-01-01T00:00:00Z";

/// `secs` after `T0`, on hand-set clocks that never step.
pub(crate) fn t(secs: u64) -> Moment {
    Moment::from_wall(
        T0.parse::<Timestamp>()
            .expect("time")
            .checked_add(Duration::from_secs(secs))
            .expect("in range"),
    )
}

pub(crate) const POD: &str = "provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q";
const PCS: [&str; 2] = ["postgresql-service-broker", "postgresql-backup-manager"];
const MANAGED_KINDS: [&str; 4] = ["serviceinstances", "servicebindings", "backups", "restores"];

/// The shipped `config.toml`, with `extra` appended.
pub(crate) fn shipped(extra: &str) -> String {
    let path = format!("{}/config.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("config.toml");
    format!("{text}\n{extra}")
}

fn rules(extra: &str) -> Rules {
    Rules::new(&Config::from_toml(&shipped(extra)).expect("valid config"))
}

fn obs(item: &str, status: Status, message: &str) -> Observation {
    Observation::new(item, status, message, t(0).wall)
}

/// The shipped checks' observations of a healthy control plane, to break one part at a time.
#[derive(Clone)]
pub(crate) struct Estate(BTreeMap<String, Vec<Observation>>);

impl Estate {
    pub(crate) fn healthy() -> Estate {
        let pass = |item: &str| obs(item, Status::Pass, "ok");
        let mut checks = BTreeMap::new();
        let mut set = |check: &str, items: Vec<Observation>| {
            checks.insert(check.to_string(), items);
        };
        set("backend-status", PCS.iter().map(|p| pass(p)).collect());
        set(
            "providers",
            vec![pass("provider-anynines"), pass("provider-kubernetes")],
        );
        set("configurations", vec![pass("anynines-dataservices")]);
        set("functions", vec![pass("function-patch-and-transform")]);
        set("provider-configs", PCS.iter().map(|p| pass(p)).collect());
        set("anynines-backend", vec![pass("anynines-backend")]);
        set("provider-pods", vec![pass(POD)]);
        set("konnectors", vec![pass("kube-bind-7xk2p")]);
        set("app-cluster-bindings", vec![pass("_none")]);
        set(
            "managed-resources",
            MANAGED_KINDS.iter().map(|k| pass(k)).collect(),
        );
        Estate(checks)
    }

    /// Replaces `check`'s item `item` (or adds it).
    pub(crate) fn set(mut self, check: &str, o: Observation) -> Estate {
        let items = self.0.entry(check.to_string()).or_default();
        items.retain(|x| x.item != o.item);
        items.push(o);
        self
    }

    /// provider-anynines' container crash-loops, with all that follows: the pod not Ready, the Provider
    /// `Healthy=False`, the health server refusing (its entries unknown), the ProviderConfigs unchecked.
    pub(crate) fn crash_looping(self) -> Estate {
        let mut e = self
            .set(
                "provider-pods",
                obs(
                    POD,
                    Status::Fail,
                    "not ready (Running): containers with unready status: [package-runtime]; container package-runtime in CrashLoopBackOff (7 restarts)",
                ),
            )
            .set(
                "providers",
                obs(
                    "provider-anynines",
                    Status::Fail,
                    "Healthy is \"False\" (UnhealthyPackageRevision): Deployment provider-anynines-3f2a9c1b7e5d does not have minimum availability",
                ),
            )
            .set(
                "backend-status",
                obs(
                    "_endpoint",
                    Status::Fail,
                    "GET http://provider-anynines-health.crossplane-system.svc:8081/backend-health: cannot connect: Connection refused",
                )
                .with_fact(Fact::NoAnswer(NoAnswer::Refused)),
            );
        for pc in PCS {
            e = e
                .set(
                    "backend-status",
                    obs(pc, Status::Unknown, "not known: the last poll failed"),
                )
                .set(
                    "provider-configs",
                    obs(
                        pc,
                        Status::Unknown,
                        "provider-anynines has not checked it since …",
                    )
                    .with_fact(Fact::Unchecked),
                );
        }
        e
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            checks: self
                .0
                .iter()
                .map(|(c, items)| (c.clone(), items.clone().into()))
                .collect(),
            ..Snapshot::default()
        }
    }

    /// The snapshot with the API server of `cluster` (`None`: the default one) silent since `since`.
    fn with_down(&self, clusters: &[(Option<&str>, Moment)]) -> Snapshot {
        let mut s = self.snapshot();
        for (cluster, since) in clusters {
            s.clusters.insert(
                cluster.map(str::to_string),
                ClusterDown {
                    since: *since,
                    message: format!(
                        "API server of cluster {} silent since {}: no answer to GET /readyz within 10s",
                        cluster.unwrap_or("default"),
                        since.wall
                    ),
                    not_ready: false,
                },
            );
        }
        s
    }
}

/// Runs the evaluations in order, carrying the memory, and returns the last one.
fn run(rules: &Rules, steps: &[(u64, Snapshot)]) -> Evaluation {
    let mut memory = Memory::default();
    let mut last = None;
    for (secs, snap) in steps {
        let e = evaluate(rules, snap, &memory, t(*secs));
        memory = e.memory.clone();
        last = Some(e);
    }
    last.expect("at least one step")
}

fn once(rules: &Rules, snapshot: Snapshot) -> Report {
    run(rules, &[(0, snapshot)]).report
}

/// `(root, via)` of an item, if something explains it.
type Cause = Option<(String, String)>;

/// Each item's expected cause.
type Expected<'a> = &'a [(&'a str, Cause)];

/// `(root, via)` of `name`, if something explains it.
fn cause(report: &Report, name: &str) -> Cause {
    let item = report
        .items
        .iter()
        .find(|i| &*i.name == name)
        .unwrap_or_else(|| panic!("no item {name}"));
    item.cause
        .as_ref()
        .map(|c| (c.root.to_string(), c.via.to_string()))
}

/// Every root cause, with the names of the items it explains.
fn roots(report: &Report) -> Vec<(String, Vec<String>)> {
    report
        .causes
        .roots
        .iter()
        .map(|r| {
            (
                r.name.to_string(),
                r.explains
                    .iter()
                    .map(|&i| report.items[i].name.to_string())
                    .collect(),
            )
        })
        .collect()
}

fn by(root: &str, via: &str) -> Option<(String, String)> {
    Some((root.to_string(), via.to_string()))
}

const PODS: &str = "provider-pods/provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q";

#[test]
fn a_crash_looping_provider_pod_is_the_one_root_cause_of_everything_it_breaks() {
    let report = once(&rules(""), Estate::healthy().crash_looping().snapshot());
    assert_eq!(
        cause(&report, "providers/provider-anynines"),
        by(PODS, PODS),
        "rule 2"
    );
    assert_eq!(
        cause(&report, "backend-status/_endpoint"),
        by(PODS, PODS),
        "rule 3"
    );
    for pc in PCS {
        assert_eq!(
            cause(&report, &format!("backend-status/{pc}")),
            by(PODS, "backend-status/_endpoint"),
            "rule 4, chained to the root"
        );
        assert_eq!(
            cause(&report, &format!("provider-configs/{pc}")),
            by(PODS, PODS),
            "rule 5"
        );
    }
    assert_eq!(cause(&report, PODS), None, "the root explains itself");
    let explained: Vec<String> = [
        "backend-status/_endpoint",
        "backend-status/postgresql-backup-manager",
        "backend-status/postgresql-service-broker",
        "providers/provider-anynines",
        "provider-configs/postgresql-backup-manager",
        "provider-configs/postgresql-service-broker",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(roots(&report), [(PODS.to_string(), explained)]);
    let root = &report.causes.roots[0];
    assert_eq!(root.status, Status::Fail);
    assert!(
        root.message.contains("CrashLoopBackOff"),
        "{}",
        root.message
    );
}

#[test]
fn two_independent_faults_are_two_root_causes() {
    // Beside the crash-looping provider-anynines: the backend Deployment down, and provider-kubernetes
    // (another provider, whose pods are not provider-anynines') unhealthy.
    let estate = Estate::healthy()
        .crash_looping()
        .set(
            "anynines-backend",
            obs("anynines-backend", Status::Fail, "not Available"),
        )
        .set(
            "providers",
            obs("provider-kubernetes", Status::Fail, "Healthy is \"False\""),
        );
    let report = once(&rules(""), estate.snapshot());
    assert_eq!(cause(&report, "anynines-backend/anynines-backend"), None);
    assert_eq!(cause(&report, "providers/provider-kubernetes"), None);
    let names: Vec<String> = roots(&report).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "providers/provider-kubernetes",
            "anynines-backend/anynines-backend",
            PODS
        ]
    );
}

/// Rule 1: a silent API server explains what turned `unknown` once it went silent — not what failed
/// before, not what was unknown before, not the items of another cluster, not the backend poll.
#[test]
fn rule_1_a_silent_api_server_explains_what_went_unknown_since() {
    let extra = "[clusters.app]\nkubeconfig = \"/nonexistent/app.kubeconfig\"\n\
        [[check]]\nname = \"konnector-app\"\ntype = \"deployment\"\ncluster = \"app\"\n\
        namespace = \"klutch-bind\"\ndeployment = \"konnector\"\n";
    let r = rules(extra);
    let before = Estate::healthy()
        .set("konnector-app", obs("konnector", Status::Pass, "Available"))
        // Failing before the silence, and unknown before it.
        .set(
            "anynines-backend",
            obs("anynines-backend", Status::Fail, "not Available"),
        )
        .set(
            "provider-configs",
            obs(
                PCS[0],
                Status::Unknown,
                "not checked yet by provider-anynines",
            )
            .with_fact(Fact::Unchecked),
        );
    // The default cluster goes silent at 5s; at 10s (stale_after later) its items turn unknown, the failing
    // one among them stays as it was seen; the app cluster's item turns unknown for a reason of its own,
    // and so does the backend poll.
    let silent = "API server of cluster default silent since …";
    let mut during = before.clone();
    for (check, item) in [
        ("providers", "provider-anynines"),
        ("providers", "provider-kubernetes"),
        ("provider-pods", POD),
        ("konnectors", "kube-bind-7xk2p"),
        ("provider-configs", PCS[0]),
    ] {
        during = during.set(check, obs(item, Status::Unknown, silent));
    }
    let during = during
        .set(
            "konnector-app",
            obs("konnector", Status::Unknown, "watch broken"),
        )
        // Failing once the cluster was silent (a judge's own timer): the silence explains only `unknown`.
        .set(
            "functions",
            obs(
                "function-patch-and-transform",
                Status::Fail,
                "deadline passed",
            ),
        )
        .set(
            "backend-status",
            obs("_endpoint", Status::Unknown, "waiting for the first poll"),
        );
    let e = run(
        &r,
        &[
            (0, before.snapshot()),
            (10, during.with_down(&[(None, t(5))])),
        ],
    );
    let report = &e.report;
    for item in [
        "providers/provider-anynines",
        "providers/provider-kubernetes",
        "konnectors/kube-bind-7xk2p",
    ] {
        assert_eq!(
            cause(report, item),
            by("cluster/default", "cluster/default"),
            "{item}"
        );
    }
    assert_eq!(
        cause(report, PODS),
        by("cluster/default", "cluster/default")
    );
    assert_eq!(
        cause(report, "anynines-backend/anynines-backend"),
        None,
        "a fail observed before the silence is not the silence's"
    );
    assert_eq!(
        cause(report, &format!("provider-configs/{}", PCS[0])),
        None,
        "unknown since before the silence"
    );
    assert_eq!(
        cause(report, "konnector-app/konnector"),
        None,
        "another cluster"
    );
    assert_eq!(
        cause(report, "functions/function-patch-and-transform"),
        None,
        "a fail is never the silence's"
    );
    assert_eq!(
        cause(report, "backend-status/_endpoint"),
        None,
        "the poll is no cluster's"
    );
    let names: Vec<String> = roots(report).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "cluster/default",
            "backend-status/_endpoint",
            "functions/function-patch-and-transform",
            &format!("provider-configs/{}", PCS[0]),
            "anynines-backend/anynines-backend",
            "konnector-app/konnector",
        ]
    );
    let cluster = &report.causes.roots[0];
    assert_eq!(
        (cluster.item, cluster.status, cluster.since),
        (None, Status::Fail, t(5).wall)
    );
    assert_eq!(cluster.explains.len(), 4);
    assert!(cluster
        .message
        .starts_with("API server of cluster default silent since"));

    // Both clusters silent: two root causes, each explaining its own items.
    let e = run(
        &r,
        &[
            (0, before.snapshot()),
            (10, during.with_down(&[(None, t(5)), (Some("app"), t(6))])),
        ],
    );
    assert_eq!(
        cause(&e.report, "konnector-app/konnector"),
        by("cluster/app", "cluster/app")
    );
    assert_eq!(
        roots(&e.report)[..2]
            .iter()
            .map(|(n, x)| (n.as_str(), x.len()))
            .collect::<Vec<_>>(),
        [("cluster/default", 4), ("cluster/app", 1)]
    );
    // The cluster series of both exist whatever they explain.
    assert_eq!(
        e.report
            .causes
            .clusters
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
        ["cluster/default", "cluster/app"]
    );
}

#[test]
fn rule_2_the_pods_of_a_package_explain_the_package_and_no_other() {
    let r = rules("");
    let pod_down = Estate::healthy().set(
        "provider-pods",
        obs(POD, Status::Fail, "not scheduled (Pending): Unschedulable"),
    );
    let table: &[(&str, Estate, Expected)] = &[
        (
            "pod not Ready, the provider unhealthy",
            pod_down.clone().set(
                "providers",
                obs("provider-anynines", Status::Fail, "Healthy is \"False\""),
            ),
            &[("providers/provider-anynines", by(PODS, PODS))],
        ),
        (
            "another provider unhealthy at the same time is not blamed",
            pod_down.clone().set(
                "providers",
                obs("provider-kubernetes", Status::Fail, "Healthy is \"False\""),
            ),
            &[("providers/provider-kubernetes", None)],
        ),
        (
            "the provider unhealthy with its pods Ready is its own root",
            Estate::healthy().set(
                "providers",
                obs("provider-anynines", Status::Fail, "Healthy is \"False\""),
            ),
            &[("providers/provider-anynines", None)],
        ),
        (
            "a pod that only warns (a recent restart) explains nothing",
            Estate::healthy()
                .set("provider-pods", obs(POD, Status::Warn, "restarted 1m ago"))
                .set(
                    "providers",
                    obs("provider-anynines", Status::Fail, "Healthy is \"False\""),
                ),
            &[("providers/provider-anynines", None)],
        ),
        (
            "a pod whose state is not known (its watch broke) explains nothing",
            Estate::healthy()
                .set(
                    "provider-pods",
                    obs(POD, Status::Unknown, "watch of pods … broken since …"),
                )
                .set(
                    "providers",
                    obs("provider-anynines", Status::Fail, "Healthy is \"False\""),
                ),
            &[("providers/provider-anynines", None)],
        ),
        (
            "no pod at all",
            Estate::healthy()
                .set(
                    "provider-pods",
                    obs("_none", Status::Fail, "no pod matches").with_fact(Fact::NoPod),
                )
                .set(
                    "providers",
                    obs("provider-anynines", Status::Unknown, "no Healthy condition"),
                ),
            &[(
                "providers/provider-anynines",
                by("provider-pods/_none", "provider-pods/_none"),
            )],
        ),
    ];
    for (case, estate, expected) in table {
        let report = once(&r, estate.snapshot());
        for (item, want) in *expected {
            assert_eq!(cause(&report, item), *want, "{case}: {item}");
        }
    }
}

#[test]
fn rule_3_a_health_server_that_does_not_answer_is_explained_by_its_package() {
    let r = rules("");
    let endpoint = |fact: Option<Fact>| {
        let o = obs("_endpoint", Status::Fail, "GET …");
        match fact {
            Some(f) => o.with_fact(f),
            None => o,
        }
    };
    let pod_down =
        Estate::healthy().set("provider-pods", obs(POD, Status::Fail, "CrashLoopBackOff"));
    let provider_down = Estate::healthy().set(
        "providers",
        obs("provider-anynines", Status::Fail, "Healthy is \"False\""),
    );
    let table: Vec<(&str, Estate, Cause)> = vec![
        (
            "refused, its pod crash-looping",
            pod_down.clone().set(
                "backend-status",
                endpoint(Some(Fact::NoAnswer(NoAnswer::Refused))),
            ),
            by(PODS, PODS),
        ),
        (
            "reset on the kept-alive connection (the first poll after a crash)",
            pod_down.clone().set(
                "backend-status",
                endpoint(Some(Fact::NoAnswer(NoAnswer::Reset))),
            ),
            by(PODS, PODS),
        ),
        (
            "timed out",
            pod_down.clone().set(
                "backend-status",
                endpoint(Some(Fact::NoAnswer(NoAnswer::TimedOut))),
            ),
            by(PODS, PODS),
        ),
        (
            "5xx, the provider (not its pods) unhealthy",
            provider_down.clone().set(
                "backend-status",
                endpoint(Some(Fact::NoAnswer(NoAnswer::ServerError))),
            ),
            by("providers/provider-anynines", "providers/provider-anynines"),
        ),
        (
            "an unreadable answer (invalid JSON) is the server's own fault",
            pod_down.clone().set("backend-status", endpoint(None)),
            None,
        ),
        (
            "refused while the provider and its pods are fine: its own root",
            Estate::healthy().set(
                "backend-status",
                endpoint(Some(Fact::NoAnswer(NoAnswer::Refused))),
            ),
            None,
        ),
    ];
    for (case, estate, want) in table {
        let report = once(&r, estate.snapshot());
        assert_eq!(cause(&report, "backend-status/_endpoint"), want, "{case}");
    }
}

#[test]
fn rule_4_a_failing_endpoint_explains_the_unknown_entries_of_its_own_check() {
    let extra = "[[check]]\nname = \"backend-2\"\ntype = \"backend-status\"\nurl = \"http://other:8081/\"\n";
    let r = rules(extra);
    let estate = Estate::healthy()
        .set(
            "backend-status",
            obs("_endpoint", Status::Fail, "body is not valid JSON"),
        )
        .set(
            "backend-status",
            obs(PCS[0], Status::Unknown, "not known: the last poll failed"),
        )
        // Another health server's entries, unknown for a reason of their own.
        .set(
            "backend-2",
            obs("other", Status::Unknown, "not known: the last poll failed"),
        )
        .set("backend-2", obs("_endpoint", Status::Warn, "slow"));
    let report = once(&r, estate.snapshot());
    assert_eq!(
        cause(&report, &format!("backend-status/{}", PCS[0])),
        by("backend-status/_endpoint", "backend-status/_endpoint")
    );
    assert_eq!(cause(&report, "backend-2/other"), None);
    assert_eq!(
        roots(&report)
            .iter()
            .map(|(n, x)| (n.as_str(), x.len()))
            .collect::<Vec<_>>(),
        [("backend-status/_endpoint", 1), ("backend-2/other", 0)]
    );
    // Only `unknown` entries are the poll's: one failing in the same report stays its own.
    let report = once(
        &r,
        estate
            .clone()
            .set("backend-status", obs(PCS[1], Status::Fail, "degraded"))
            .snapshot(),
    );
    assert_eq!(cause(&report, &format!("backend-status/{}", PCS[1])), None);
    // A check whose task died has every item unknown with one reason: `_endpoint` is no failing poll then.
    let died = "the check's task panicked; restarting in 1s";
    let report = once(
        &r,
        Estate::healthy()
            .set("backend-status", obs("_endpoint", Status::Unknown, died))
            .set("backend-status", obs(PCS[0], Status::Unknown, died))
            .snapshot(),
    );
    assert_eq!(cause(&report, &format!("backend-status/{}", PCS[0])), None);
}

#[test]
fn rule_5_unchecked_provider_configs_are_explained_by_their_provider() {
    let r = rules("");
    let unchecked = |pc: &str| {
        obs(
            pc,
            Status::Unknown,
            "provider-anynines has not checked it since …",
        )
        .with_fact(Fact::Unchecked)
    };
    let estate = Estate::healthy()
        .set("provider-pods", obs(POD, Status::Fail, "CrashLoopBackOff"))
        .set("provider-configs", unchecked(PCS[0]))
        // Degraded, as provider-anynines last saw it: the broker's fault, not the pod's.
        .set(
            "provider-configs",
            obs(PCS[1], Status::Fail, "Get \"http://…\": connection refused"),
        );
    let report = once(&r, estate.snapshot());
    assert_eq!(
        cause(&report, &format!("provider-configs/{}", PCS[0])),
        by(PODS, PODS)
    );
    assert_eq!(
        cause(&report, &format!("provider-configs/{}", PCS[1])),
        None
    );
    // Unknown for another reason (a status the provider did not write whole) is not blamed on it.
    let odd = Estate::healthy()
        .set("provider-pods", obs(POD, Status::Fail, "CrashLoopBackOff"))
        .set(
            "provider-configs",
            obs(
                PCS[0],
                Status::Unknown,
                "status.health.lastStatus is missing",
            ),
        );
    let report = once(&r, odd.snapshot());
    assert_eq!(
        cause(&report, &format!("provider-configs/{}", PCS[0])),
        None
    );
    // The provider itself unhealthy, its pods fine.
    let provider = Estate::healthy()
        .set(
            "providers",
            obs("provider-anynines", Status::Fail, "Healthy is \"False\""),
        )
        .set("provider-configs", unchecked(PCS[0]));
    let report = once(&r, provider.snapshot());
    assert_eq!(
        cause(&report, &format!("provider-configs/{}", PCS[0])),
        by("providers/provider-anynines", "providers/provider-anynines")
    );
}

#[test]
fn rule_6_a_failing_provider_config_explains_its_backend_entry() {
    let r = rules("");
    let estate = Estate::healthy()
        .set(
            "provider-configs",
            obs(PCS[1], Status::Fail, "connection refused"),
        )
        .set("backend-status", obs(PCS[1], Status::Fail, "degraded"))
        // Degraded on the health server while its ProviderConfig passes: its own root.
        .set("backend-status", obs(PCS[0], Status::Fail, "degraded"));
    let report = once(&r, estate.snapshot());
    let pc = format!("provider-configs/{}", PCS[1]);
    assert_eq!(
        cause(&report, &format!("backend-status/{}", PCS[1])),
        by(&pc, &pc)
    );
    assert_eq!(cause(&report, &format!("backend-status/{}", PCS[0])), None);
    assert_eq!(
        roots(&report)
            .iter()
            .map(|(n, x)| (n.as_str(), x.len()))
            .collect::<Vec<_>>(),
        [
            (format!("backend-status/{}", PCS[0]).as_str(), 0),
            (pc.as_str(), 1)
        ]
    );
}

/// Rule 7: a managed-resources kind that fails only by the resources of failing ProviderConfigs is
/// theirs; one that would fail without them (another ProviderConfig past the thresholds that passes) is a
/// root cause of its own, and a kind bad for another reason (its CRD missing) is never blamed on them.
#[test]
fn rule_7_failing_provider_configs_explain_the_managed_resources_kind_they_fail() {
    let r = rules("");
    let fails_by = |kind: &str, pcs: &[&str]| {
        obs(
            kind,
            Status::Fail,
            "at least 3 and more than 10% of one ProviderConfig's … fail",
        )
        .with_fact(Fact::FailsWithin(
            pcs.iter().map(|p| Arc::from(*p)).collect(),
        ))
    };
    let pc = |name: &str| format!("provider-configs/{name}");
    let estate = Estate::healthy()
        .set(
            "provider-configs",
            obs(PCS[0], Status::Fail, "connection refused"),
        )
        .set("managed-resources", fails_by("serviceinstances", &[PCS[0]]))
        // Fails by two ProviderConfigs, one of which passes: it would fail without the failing one's.
        .set("managed-resources", fails_by("backups", &[PCS[0], PCS[1]]))
        // Fails by a passing ProviderConfig while another one fails: not blamed on that one.
        .set("managed-resources", fails_by("servicebindings", &[PCS[1]]))
        .set(
            "managed-resources",
            obs(
                "restores",
                Status::Unknown,
                "waiting for initial sync of restores…: is provider-anynines installed?",
            ),
        );
    let report = once(&r, estate.snapshot());
    assert_eq!(
        cause(&report, "managed-resources/serviceinstances"),
        by(&pc(PCS[0]), &pc(PCS[0]))
    );
    for own in ["backups", "servicebindings", "restores"] {
        assert_eq!(
            cause(&report, &format!("managed-resources/{own}")),
            None,
            "{own}"
        );
    }
    // Both ProviderConfigs failing: the kind failing by both is theirs too (by the first).
    let report = once(
        &r,
        estate
            .set(
                "provider-configs",
                obs(PCS[1], Status::Fail, "connection refused"),
            )
            .snapshot(),
    );
    assert_eq!(
        cause(&report, "managed-resources/backups"),
        by(&pc(PCS[0]), &pc(PCS[0]))
    );
    assert_eq!(
        cause(&report, "managed-resources/servicebindings"),
        by(&pc(PCS[1]), &pc(PCS[1]))
    );
    // Chained: a crash-looping provider leaves its ProviderConfigs unchecked, and the kind failing by one of
    // them has the pod as its root.
    let report = once(
        &r,
        Estate::healthy()
            .crash_looping()
            .set("managed-resources", fails_by("serviceinstances", &[PCS[0]]))
            .snapshot(),
    );
    assert_eq!(
        cause(&report, "managed-resources/serviceinstances"),
        by(PODS, &pc(PCS[0]))
    );
}

/// Rule 7 links a kind only to the ProviderConfigs of a `provider-config` check of its own cluster, and of
/// its own package where both name one: a same-named ProviderConfig failing on an app cluster, or of another
/// provider, is another ProviderConfig.
#[test]
fn rule_7_links_a_kind_only_to_provider_configs_of_its_cluster_and_package() {
    let r = rules(
        "[clusters.app]\nkubeconfig = \"/nonexistent/app.kubeconfig\"\n\
         [[check]]\nname = \"app-provider-configs\"\ntype = \"provider-config\"\ncluster = \"app\"\n\
         [[check]]\nname = \"app-managed\"\ntype = \"managed-resources\"\ncluster = \"app\"\n\
         [[check]]\nname = \"kubernetes-provider-configs\"\ntype = \"provider-config\"\n\
         package = \"providers/provider-kubernetes\"\n\
         [[check]]\nname = \"anynines-managed\"\ntype = \"managed-resources\"\n\
         package = \"providers/provider-anynines\"\n",
    );
    let fails_by_pc0 = |kind: &str| {
        obs(kind, Status::Fail, "at least 3 and more than 10% … fail")
            .with_fact(Fact::FailsWithin(vec![Arc::from(PCS[0])].into()))
    };
    let failing = |pc: &str| obs(pc, Status::Fail, "connection refused");
    let mut estate = Estate::healthy();
    for check in ["app-provider-configs", "kubernetes-provider-configs"] {
        estate = estate.set(check, obs(PCS[1], Status::Pass, "Available"));
    }
    for check in ["app-managed", "anynines-managed"] {
        for kind in MANAGED_KINDS {
            estate = estate.set(check, obs(kind, Status::Pass, "ok"));
        }
    }
    let estate = estate
        .set("managed-resources", fails_by_pc0("serviceinstances"))
        .set("app-managed", fails_by_pc0("serviceinstances"))
        .set("anynines-managed", fails_by_pc0("serviceinstances"))
        // The same name failing on the app cluster and of provider-kubernetes; the control plane's passes.
        .set("app-provider-configs", failing(PCS[0]))
        .set("kubernetes-provider-configs", failing(PCS[0]));
    let report = once(&r, estate.snapshot());
    let app_pc = format!("app-provider-configs/{}", PCS[0]);
    assert_eq!(
        cause(&report, "app-managed/serviceinstances"),
        by(&app_pc, &app_pc),
        "the app cluster's kind, by the app cluster's ProviderConfig"
    );
    assert_eq!(
        cause(&report, "anynines-managed/serviceinstances"),
        None,
        "not by provider-kubernetes' ProviderConfig, nor by one of another cluster"
    );
    // A kind that names no package: any package of its own cluster, never the app cluster's.
    let k8s_pc = format!("kubernetes-provider-configs/{}", PCS[0]);
    assert_eq!(
        cause(&report, "managed-resources/serviceinstances"),
        by(&k8s_pc, &k8s_pc)
    );
    // The control plane's own failing too: the kind of its package is theirs.
    let pc = format!("provider-configs/{}", PCS[0]);
    let report = once(
        &r,
        estate.set("provider-configs", failing(PCS[0])).snapshot(),
    );
    assert_eq!(
        cause(&report, "anynines-managed/serviceinstances"),
        by(&pc, &pc)
    );
    assert_eq!(
        cause(&report, "app-managed/serviceinstances"),
        by(&app_pc, &app_pc)
    );
}

/// Rule 8: a broker that does not answer is the root of its ProviderConfig, its backend entry and the kind
/// failing by it — also before provider-anynines has noticed; a broker that answers (or of another name, or
/// of another cluster) is never blamed.
#[test]
fn rule_8_a_broker_that_does_not_answer_explains_its_provider_config_backend_entry_and_kind() {
    let r = rules(
        "[clusters.app]\nkubeconfig = \"/nonexistent/app.kubeconfig\"\n\
         [[check]]\nname = \"brokers\"\ntype = \"broker\"\n\
         [[check]]\nname = \"app-brokers\"\ntype = \"broker\"\ncluster = \"app\"\n",
    );
    let down = |pc: &str| {
        obs(
            pc,
            Status::Fail,
            "HEAD http://broker:3000/instances: connection refused",
        )
    };
    let fails_by = |kind: &str, pcs: &[&str]| {
        obs(kind, Status::Fail, "at least 3 and more than 10% … fail").with_fact(Fact::FailsWithin(
            pcs.iter().map(|p| Arc::from(*p)).collect(),
        ))
    };
    let mut healthy = Estate::healthy();
    for pc in PCS {
        healthy = healthy
            .set("brokers", obs(pc, Status::Pass, "broker answers"))
            .set("app-brokers", obs(pc, Status::Pass, "broker answers"));
    }
    let broker = format!("brokers/{}", PCS[0]);
    let pc = format!("provider-configs/{}", PCS[0]);

    // The provider has noticed: everything of that ProviderConfig is the broker's.
    let noticed = healthy
        .clone()
        .set("brokers", down(PCS[0]))
        .set(
            "provider-configs",
            obs(PCS[0], Status::Fail, "connection refused"),
        )
        .set("backend-status", obs(PCS[0], Status::Fail, "degraded"))
        .set("managed-resources", fails_by("serviceinstances", &[PCS[0]]));
    let report = once(&r, noticed.snapshot());
    assert_eq!(cause(&report, &pc), by(&broker, &broker));
    assert_eq!(
        cause(&report, &format!("backend-status/{}", PCS[0])),
        by(&broker, &pc)
    );
    assert_eq!(
        cause(&report, "managed-resources/serviceinstances"),
        by(&broker, &pc)
    );
    assert_eq!(
        roots(&report)
            .iter()
            .map(|(n, x)| (n.as_str(), x.len()))
            .collect::<Vec<_>>(),
        [(broker.as_str(), 3)],
        "told once"
    );

    // Not yet noticed: the ProviderConfig still passes, the kind fails by it already.
    let report = once(
        &r,
        healthy
            .clone()
            .set("brokers", down(PCS[0]))
            .set("managed-resources", fails_by("serviceinstances", &[PCS[0]]))
            .set("managed-resources", fails_by("backups", &[PCS[0], PCS[1]]))
            .snapshot(),
    );
    assert_eq!(
        cause(&report, "managed-resources/serviceinstances"),
        by(&broker, &broker)
    );
    assert_eq!(
        cause(&report, "managed-resources/backups"),
        None,
        "it would fail by the other ProviderConfig, whose broker answers"
    );

    // Unrelated: another broker down, the app cluster's broker of the same name down, or this broker
    // answering with an untrusted certificate explain nothing of this ProviderConfig.
    for (check, o) in [
        ("brokers", down(PCS[1])),
        ("app-brokers", down(PCS[0])),
        (
            "brokers",
            obs(PCS[0], Status::Warn, "certificate is not trusted"),
        ),
    ] {
        let report = once(
            &r,
            healthy
                .clone()
                .set(check, o)
                .set(
                    "provider-configs",
                    obs(PCS[0], Status::Fail, "connection refused"),
                )
                .set("managed-resources", fails_by("serviceinstances", &[PCS[0]]))
                .snapshot(),
        );
        assert_eq!(cause(&report, &pc), None, "{check}");
        assert_eq!(
            cause(&report, "managed-resources/serviceinstances"),
            by(&pc, &pc),
            "{check}"
        );
    }
}

/// Causes change wording and alerting, never a verdict: the same observations with and without a silent
/// cluster behind them are counted alike by both endpoints.
#[test]
fn causes_never_change_a_verdict() {
    let r = rules("");
    let estate = Estate::healthy().crash_looping();
    let plain = run(
        &r,
        &[(0, Estate::healthy().snapshot()), (10, estate.snapshot())],
    );
    let blamed = run(
        &r,
        &[
            (0, Estate::healthy().snapshot()),
            (10, estate.with_down(&[(None, t(5))])),
        ],
    );
    assert_ne!(plain.report.causes, blamed.report.causes);
    assert_eq!(plain.report.healthz, blamed.report.healthz);
    assert_eq!(plain.report.readyz, blamed.report.readyz);
}

/// A silence on the root cause silences the root cause, not what it explains.
#[test]
fn a_silence_on_a_root_cause_does_not_silence_the_items_it_explains() {
    let r = rules(
        "[[silence]]\nmatch = \"provider-pods/*\"\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"OPS-1\"\n",
    );
    let report = once(&r, Estate::healthy().crash_looping().snapshot());
    let shown = |name: &str| {
        report
            .readyz
            .items
            .iter()
            .find(|c| &*c.name == name)
            .map(|c| c.status)
    };
    assert_eq!(shown(PODS), Some(Status::Warn));
    assert_eq!(shown("providers/provider-anynines"), Some(Status::Fail));
    assert_eq!(shown("backend-status/_endpoint"), Some(Status::Fail));
    assert!(!report.readyz.passed());
    assert_eq!(
        cause(&report, "providers/provider-anynines"),
        by(PODS, PODS)
    );
}

/// Both endpoints name the same causes: "bad" is judged before `warn_only`, damping and the `unknown`
/// mapping, which differ between them.
#[test]
fn bad_is_judged_before_the_endpoints_policies() {
    let r = rules(
        "[[silence]]\nmatch = \"providers\"\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"OPS-2\"\n",
    );
    // /healthz damps for 30s and counts unknown as warn: at 1s the pod is not yet failing there.
    let report = run(
        &r,
        &[
            (0, Estate::healthy().snapshot()),
            (1, Estate::healthy().crash_looping().snapshot()),
        ],
    )
    .report;
    let healthz = |name: &str| {
        report
            .healthz
            .items
            .iter()
            .find(|c| &*c.name == name)
            .map(|c| c.status)
    };
    assert_eq!(healthz(PODS), Some(Status::Warn), "damped");
    let readyz = report
        .readyz
        .items
        .iter()
        .find(|c| &*c.name == "providers/provider-anynines")
        .map(|c| c.status);
    assert_eq!(readyz, Some(Status::Warn), "silenced");
    assert_eq!(
        cause(&report, "providers/provider-anynines"),
        by(PODS, PODS)
    );
    assert_eq!(
        healthz("provider-configs/postgresql-service-broker"),
        Some(Status::Warn)
    );
    assert_eq!(roots(&report).len(), 1);
    assert_eq!(roots(&report)[0].1.len(), 6);
}

/// The shipped configuration against `cp`, its ProviderConfigs stale after `stale` instead of 10 minutes.
fn with_stale_provider_configs(cp: &klutch_sim::SimControlPlane, stale: &str) -> String {
    let text = crate::common::full_config(&cp.backend.url(), "");
    let mut doc: toml::Table = text.parse().expect("TOML");
    for check in doc["check"]
        .as_array_mut()
        .expect("checks")
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
    {
        if check["name"].as_str() == Some("provider-configs") {
            check.insert("check_stale_after".into(), stale.into());
        }
    }
    toml::to_string(&doc).expect("TOML")
}

fn root_lines(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| l.starts_with("root cause: "))
        .collect()
}

/// The simulator's crash-looping provider-anynines, through the real binary: the pod, the Provider, the
/// refused health server with its entries, and the ProviderConfigs that go unchecked are one root cause,
/// `klutch_health_root_cause` is 1 for the pod alone, and all of it is gone after the recovery.
#[tokio::test]
async fn a_crash_looping_provider_is_one_root_cause_end_to_end() {
    use crate::common::{line, Service};
    let cp = klutch_sim::SimControlPlane::start()
        .await
        .expect("simulated control plane");
    cp.spawn_provider_loop(Duration::from_millis(500), Duration::from_millis(500));
    let svc = Service::against(&cp, &with_stale_provider_configs(&cp, "3s"), &[]).await;
    svc.wait_for("/readyz", "the initial sync", |r| r.status == 200)
        .await;
    let series = |check: &str, item: &str| {
        format!("klutch_health_root_cause{{check=\"{check}\",item=\"{item}\"}}")
    };
    assert_eq!(svc.metric(&series("provider-pods", POD)).await, Some(0.0));
    assert_eq!(
        svc.metric(&series("cluster", "default")).await,
        Some(0.0),
        "exported from the start"
    );

    cp.crash_loop_provider(true);
    let r = svc
        .wait_for("/readyz", "every symptom explained by the pod", |r| {
            r.body.contains(" explains 6 items\n")
        })
        .await;
    assert_eq!(r.status, 503);
    let roots = root_lines(&r.body);
    assert_eq!(roots.len(), 1, "{}", r.body);
    assert!(
        roots[0].starts_with(&format!("root cause: {PODS} (not ready (Running): ")),
        "{}",
        r.body
    );
    assert!(
        roots[0].contains("CrashLoopBackOff (7 restarts)"),
        "{}",
        r.body
    );
    let suffix = format!(" (cause: {PODS})");
    for item in [
        "providers/provider-anynines",
        "backend-status/_endpoint",
        "backend-status/postgresql-service-broker",
        "provider-configs/postgresql-backup-manager",
    ] {
        assert!(
            line(&r.body, item).ends_with(&suffix),
            "{item}:\n{}",
            r.body
        );
    }
    assert!(line(&r.body, "backend-status/_endpoint").contains("Connection refused"));
    assert!(!line(&r.body, PODS).contains("(cause:"), "{}", r.body);
    assert_eq!(svc.metric(&series("provider-pods", POD)).await, Some(1.0));
    for (check, item) in [
        ("providers", "provider-anynines"),
        ("backend-status", "_endpoint"),
        ("provider-configs", "postgresql-service-broker"),
        ("cluster", "default"),
    ] {
        assert_eq!(
            svc.metric(&series(check, item)).await,
            Some(0.0),
            "{check}/{item}"
        );
    }

    cp.crash_loop_provider(false);
    let r = svc
        .wait_for("/readyz", "the recovery", |r| r.status == 200)
        .await;
    assert_eq!(r.body, "ok");
    assert_eq!(svc.metric(&series("provider-pods", POD)).await, Some(0.0));
}
