//! Silences and maintenance windows in the policy, table-tested with a hand-set clock.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use klutch_health::clock::Moment;
use klutch_health::config::Config;
use klutch_health::signals::{Observation, Snapshot};
use klutch_health::verdict::policy::{evaluate, Evaluation, Memory, Rules};
use klutch_health::verdict::report::{Endpoint, Status};

const T0: &str = "2026-01-01T00:00:00Z";

/// `secs` after `T0`, on hand-set clocks that never step.
fn t(secs: u64) -> Moment {
    Moment::from_wall(
        T0.parse::<Timestamp>()
            .expect("time")
            .checked_add(Duration::from_secs(secs))
            .expect("in range"),
    )
}

fn config(extra: &str) -> Result<Config, String> {
    let text = format!(
        "[[check]]\nname = \"a\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\nrequire = \"any\"\n{extra}"
    );
    Config::from_toml(&text).map_err(|e| e.to_string())
}

fn rules(extra: &str) -> Rules {
    Rules::new(&config(extra).expect("valid config"))
}

/// Check `a` with items `x` and `y` of the given statuses.
fn snapshot(x: Status, y: Status) -> Snapshot {
    let obs = |item: &str, status| {
        Observation::new(item, status, format!("{item} is {status}"), t(0).wall)
    };
    Snapshot {
        checks: BTreeMap::from([("a".to_string(), vec![obs("x", x), obs("y", y)].into())]),
        ..Snapshot::default()
    }
}

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

fn item<'a>(
    e: &'a Evaluation,
    endpoint: Endpoint,
    name: &str,
) -> &'a klutch_health::verdict::report::Counted {
    e.report
        .endpoint(endpoint)
        .items
        .iter()
        .find(|c| &*c.name == name)
        .expect("item counted")
}

const SILENCE_X: &str = "[[silence]]\nmatch = \"a/x\"\nuntil = \"2026-01-01T00:01:40Z\"\nreason = \"retiring x (OPS-1)\"\n";

#[test]
fn a_silenced_failure_warns_until_the_instant_it_ends_and_then_fails_at_once() {
    // x fails for 100 s under a 30 s fail_after; the silence ends at 100 s.
    let r = rules(&format!(
        "[endpoints.readyz]\nfail_after = \"30s\"\n{SILENCE_X}"
    ));
    let failing = snapshot(Status::Fail, Status::Fail);
    let steps: Vec<(u64, Snapshot)> = [0, 10, 40, 99]
        .iter()
        .map(|s| (*s, failing.clone()))
        .collect();
    let during = run(&r, &steps);
    let x = item(&during, Endpoint::Readyz, "a/x");
    assert_eq!(x.status, Status::Warn);
    assert_eq!(
        x.text(),
        "silenced until 2026-01-01T00:01:40Z (retiring x (OPS-1)): x is fail"
    );
    // The engine is told to come back at the silence's end, without any new observation.
    assert_eq!(during.next, Some(t(100).mono));
    let mut steps = steps;
    steps.push((100, failing.clone()));
    let after = run(&r, &steps);
    let x = item(&after, Endpoint::Readyz, "a/x");
    assert_eq!(
        x.status,
        Status::Fail,
        "damping ran underneath: {:?}",
        x.notes
    );
    assert!(after.report.operating.silences[0].expired);
    assert!(!during.report.operating.silences[0].expired);
}

#[test]
fn a_silence_applies_after_damping_so_a_damped_failure_is_not_marked_silenced() {
    let r = rules(&format!(
        "[endpoints.readyz]\nfail_after = \"30s\"\n{SILENCE_X}"
    ));
    let e = run(&r, &[(0, snapshot(Status::Fail, Status::Pass))]);
    let x = item(&e, Endpoint::Readyz, "a/x");
    assert_eq!(x.status, Status::Warn);
    assert!(x.notes.operator.is_none(), "{:?}", x.notes);
    assert!(x.notes.damping.is_some());
}

#[test]
fn a_silence_applies_after_the_unknown_mapping() {
    let r = rules(SILENCE_X);
    let e = run(&r, &[(0, snapshot(Status::Unknown, Status::Pass))]);
    // readyz maps unknown to fail, which the silence then catches; healthz maps it to warn: nothing to silence.
    assert!(item(&e, Endpoint::Readyz, "a/x").notes.operator.is_some());
    assert!(item(&e, Endpoint::Healthz, "a/x").notes.operator.is_none());
    assert!(e.report.readyz.passed());
}

#[test]
fn a_silenced_item_still_counts_as_failing_for_require() {
    // require = "any": x silenced, y failing. Were x counted as passing, y would be excused.
    let r = rules(SILENCE_X);
    let e = run(&r, &[(0, snapshot(Status::Fail, Status::Fail))]);
    assert_eq!(item(&e, Endpoint::Readyz, "a/x").status, Status::Warn);
    assert_eq!(item(&e, Endpoint::Readyz, "a/y").status, Status::Fail);
    assert!(!e.report.readyz.passed());
}

#[test]
fn a_silence_matches_by_glob_and_leaves_passing_items_alone() {
    let r =
        rules("[[silence]]\nmatch = \"a/*\"\nuntil = \"2026-01-01T00:01:40Z\"\nreason = \"r\"\n");
    let e = run(&r, &[(0, snapshot(Status::Fail, Status::Pass))]);
    assert!(item(&e, Endpoint::Readyz, "a/x").notes.operator.is_some());
    assert!(item(&e, Endpoint::Readyz, "a/y").notes.operator.is_none());
    assert_eq!(item(&e, Endpoint::Readyz, "a/y").status, Status::Pass);
}

#[test]
fn an_expired_silence_silences_nothing() {
    let r = rules(SILENCE_X);
    let e = run(&r, &[(200, snapshot(Status::Fail, Status::Fail))]);
    assert_eq!(item(&e, Endpoint::Readyz, "a/x").status, Status::Fail);
    assert!(item(&e, Endpoint::Readyz, "a/x").notes.operator.is_none());
    assert!(e.report.operating.silences[0].expired);
    assert_eq!(e.next, None);
}

#[test]
fn every_silence_key_is_required_and_named() {
    for (missing, text) in [
        (
            "match",
            "until = \"2026-01-01T00:01:40Z\"\nreason = \"r\"\n",
        ),
        ("until", "match = \"a\"\nreason = \"r\"\n"),
        (
            "reason",
            "match = \"a\"\nuntil = \"2026-01-01T00:01:40Z\"\n",
        ),
    ] {
        let e = config(&format!("[[silence]]\n{text}")).expect_err("invalid");
        assert!(e.contains("silence[0]"), "{e}");
        assert!(e.contains(&format!("missing field `{missing}`")), "{e}");
    }
    let e = config("[[silence]]\nmatch = \"a\"\nuntil = \"tomorrow\"\nreason = \"r\"\n")
        .expect_err("invalid");
    assert!(e.contains("silence[0].until"), "{e}");
}

const WINDOW: &str = "[maintenance]\nfrom = \"2026-01-01T00:00:10Z\"\nuntil = \"2026-01-01T00:00:20Z\"\nreason = \"upgrade\"\n";

#[test]
fn maintenance_fails_readyz_only_within_its_window() {
    let r = rules(WINDOW);
    let passing = snapshot(Status::Pass, Status::Pass);
    for (secs, in_window, next) in [
        (0, false, Some(t(10).mono)),
        (10, true, Some(t(20).mono)),
        (19, true, Some(t(20).mono)),
        (20, false, None),
    ] {
        let e = run(&r, &[(secs, passing.clone())]);
        assert_eq!(e.report.readyz.passed(), !in_window, "at {secs}");
        assert!(e.report.healthz.passed(), "at {secs}");
        assert_eq!(e.next, next, "at {secs}");
        assert_eq!(
            e.report.operating.maintenance.as_ref().map(|m| m.active),
            Some(in_window)
        );
        if in_window {
            let m = &e.report.readyz.items[0];
            assert_eq!(m.text(), "maintenance until 2026-01-01T00:00:20Z: upgrade");
        }
    }
}

#[test]
fn maintenance_without_from_starts_at_once_and_must_end_after_it_starts() {
    let r = rules("[maintenance]\nuntil = \"2026-01-01T00:00:20Z\"\nreason = \"now\"\n");
    assert!(!run(&r, &[(0, snapshot(Status::Pass, Status::Pass))])
        .report
        .readyz
        .passed());
    let e = config(
        "[maintenance]\nfrom = \"2026-01-01T00:00:20Z\"\nuntil = \"2026-01-01T00:00:20Z\"\nreason = \"r\"\n",
    )
    .expect_err("invalid");
    assert!(e.contains("maintenance.until"), "{e}");
    let e = config("[maintenance]\nuntil = \"2026-01-01T00:00:20Z\"\n").expect_err("invalid");
    assert!(e.contains("missing field `reason`"), "{e}");
}

#[test]
fn a_reloaded_policy_keeps_the_damping_of_unchanged_items() {
    // x has failed for 20 s of a 30 s fail_after when a reload adds check b: 10 s later it counts as failed,
    // as it would have without the reload.
    let before = rules("[endpoints.readyz]\nfail_after = \"30s\"\n");
    let after = Rules::new(
        &config(
            "[[check]]\nname = \"b\"\ntype = \"backend-status\"\nurl = \"http://x:2/\"\n\
             [endpoints.readyz]\nfail_after = \"30s\"\n",
        )
        .expect("valid config"),
    );
    let failing = snapshot(Status::Fail, Status::Fail);
    let first = evaluate(&before, &failing, &Memory::default(), t(0));
    let second = evaluate(&before, &failing, &first.memory, t(20));
    let reloaded = evaluate(&after, &failing, &second.memory, t(30));
    assert_eq!(
        item(&reloaded, Endpoint::Readyz, "a/x").status,
        Status::Fail
    );
    assert!(reloaded
        .report
        .readyz
        .items
        .iter()
        .any(|c| c.name.check() == "b"));
}
