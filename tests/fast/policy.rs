//! The policy as a pure function, table-tested with a hand-set clock.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use klutch_health::clock::{Due, Moment};
use klutch_health::config::Config;
use klutch_health::signals::{Expiry, Observation, Snapshot};
use klutch_health::verdict::policy::{evaluate, Memory, Rules};
use klutch_health::verdict::report::{Endpoint, Report, Status};

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

fn rules(policy: &str) -> Rules {
    let text = format!(
        "[[check]]\nname = \"a\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\n\
         [[check]]\nname = \"b\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\n{policy}"
    );
    Rules::new(&Config::from_toml(&text).expect("valid config"))
}

fn obs(item: &str, status: Status) -> Observation {
    Observation::new(item, status, format!("{item} is {status}"), t(0).wall)
}

fn snapshot(a: Vec<Observation>, b: Vec<Observation>) -> Snapshot {
    Snapshot {
        checks: BTreeMap::from([("a".to_string(), a.into()), ("b".to_string(), b.into())]),
        ..Snapshot::default()
    }
}

/// `(name, shown status)` of every counted item of `endpoint`.
fn shown(report: &Report, endpoint: Endpoint) -> Vec<(String, Status)> {
    report
        .endpoint(endpoint)
        .items
        .iter()
        .map(|c| (c.name.to_string(), c.status))
        .collect()
}

/// Runs the evaluations in order, carrying the memory, and returns the last one.
fn run(rules: &Rules, steps: &[(u64, Snapshot)]) -> klutch_health::verdict::policy::Evaluation {
    let mut memory = Memory::default();
    let mut last = None;
    for (secs, snap) in steps {
        let e = evaluate(rules, snap, &memory, t(*secs));
        memory = e.memory.clone();
        last = Some(e);
    }
    last.expect("at least one step")
}

#[test]
fn unknown_counts_as_the_endpoint_says() {
    let snap = snapshot(
        vec![obs("x", Status::Unknown)],
        vec![obs("y", Status::Pass)],
    );
    for (unknown, expected, passes) in [
        ("fail", Status::Fail, false),
        ("warn", Status::Warn, true),
        ("pass", Status::Pass, true),
    ] {
        let r = rules(&format!("[endpoints.readyz]\nunknown = \"{unknown}\"\n"));
        let e = evaluate(&r, &snap, &Memory::default(), t(0));
        assert_eq!(
            e.report.readyz.items[0].status, expected,
            "unknown = {unknown}"
        );
        assert_eq!(e.report.readyz.passed(), passes, "unknown = {unknown}");
    }
    // Defaults: fail on readyz, warn on healthz.
    let e = evaluate(&rules(""), &snap, &Memory::default(), t(0));
    assert!(!e.report.readyz.passed());
    assert!(e.report.healthz.passed());
    assert_eq!(e.report.healthz.status(), Status::Warn);
}

#[test]
fn include_exclude_and_warn_only_globs() {
    let snap = snapshot(
        vec![obs("x", Status::Fail), obs("y", Status::Pass)],
        vec![obs("z", Status::Fail)],
    );
    let table: &[(&str, &[(&str, Status)])] = &[
        (
            "include = [\"a\"]",
            &[("a/x", Status::Fail), ("a/y", Status::Pass)],
        ),
        (
            "include = [\"a/*\"]",
            &[("a/x", Status::Fail), ("a/y", Status::Pass)],
        ),
        ("include = [\"*/y\"]", &[("a/y", Status::Pass)]),
        ("exclude = [\"a\"]", &[("b/z", Status::Fail)]),
        ("exclude = [\"a/x\", \"b\"]", &[("a/y", Status::Pass)]),
        (
            "warn_only = [\"b\"]",
            &[
                ("a/x", Status::Fail),
                ("a/y", Status::Pass),
                ("b/z", Status::Warn),
            ],
        ),
        (
            "warn_only = [\"*/x\"]",
            &[
                ("a/x", Status::Warn),
                ("a/y", Status::Pass),
                ("b/z", Status::Fail),
            ],
        ),
    ];
    for (policy, expected) in table {
        let r = rules(&format!("[endpoints.readyz]\n{policy}\n"));
        let e = evaluate(&r, &snap, &Memory::default(), t(0));
        let want: Vec<(String, Status)> =
            expected.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        assert_eq!(shown(&e.report, Endpoint::Readyz), want, "{policy}");
    }
}

/// A wall clock stepped back an hour must not make a failure of one second count as one of an hour: damping
/// measures on the monotonic clock, and the times shown stay in the past of the stepped clock's now.
#[test]
fn a_wall_clock_step_backwards_does_not_defeat_fail_after() {
    let r = rules("[endpoints.readyz]\nfail_after = \"2s\"\n");
    let pass = snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = snapshot(vec![obs("x", Status::Fail)], vec![]);
    let e = evaluate(&r, &pass, &Memory::default(), t(0));
    let e = evaluate(&r, &fail, &e.memory, t(10));
    // From 10s on the monotonic clock, the wall clock reads an hour earlier.
    let stepped = |secs| Moment {
        mono: t(secs).mono,
        wall: t(secs)
            .wall
            .checked_sub(Duration::from_secs(3600))
            .expect("in range"),
    };
    let e = evaluate(&r, &fail, &e.memory, stepped(11));
    let x = &e.report.readyz.items[0];
    assert_eq!(x.status, Status::Warn, "failing for 1s, not for an hour");
    assert_eq!(
        x.notes.damping.as_deref(),
        Some("failing for 1s, counts as failed after 2s")
    );
    assert_eq!(e.next, Some(t(12).mono));
    // The failure began a second ago as the stepped clock names it, never after its now.
    assert_eq!(e.report.items[0].since, stepped(10).wall);
    assert_eq!(x.since, stepped(10).wall);
    assert!(e.report.items[0].since <= e.report.evaluated.wall);
    let e = evaluate(&r, &fail, &e.memory, stepped(12));
    assert_eq!(
        e.report.readyz.items[0].status,
        Status::Fail,
        "2s have passed"
    );
    assert_eq!(
        e.report.items[0].since,
        stepped(10).wall,
        "and it stays put"
    );
}

#[test]
fn a_failure_shorter_than_fail_after_never_counts() {
    let r = rules("[endpoints.readyz]\nfail_after = \"30s\"\n");
    let pass = || snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = || snapshot(vec![obs("x", Status::Fail)], vec![]);
    let e = run(&r, &[(0, pass()), (10, fail()), (39, fail())]);
    let item = &e.report.readyz.items[0];
    assert_eq!(item.status, Status::Warn);
    // The policy's note is its own field; the item's message stays as observed.
    assert_eq!(
        item.notes.damping.as_deref(),
        Some("failing for 29s, counts as failed after 30s")
    );
    assert_eq!(item.message, "x is fail");
    assert!(
        item.text()
            .starts_with("failing for 29s, counts as failed after 30s: x is fail"),
        "{}",
        item.text()
    );
    assert_eq!(
        e.next,
        Some(t(40).mono),
        "the engine is woken at the deadline"
    );
    assert!(e.report.readyz.passed());
    // Recovering before the deadline: never shown as failed.
    let e = run(&r, &[(0, pass()), (10, fail()), (39, fail()), (39, pass())]);
    assert_eq!(e.report.readyz.items[0].status, Status::Pass);
    assert_eq!(e.next, None);
}

#[test]
fn a_failure_counts_exactly_at_fail_after() {
    let r = rules("[endpoints.readyz]\nfail_after = \"30s\"\n");
    let pass = snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = snapshot(vec![obs("x", Status::Fail)], vec![]);
    let e = run(
        &r,
        &[(0, pass.clone()), (10, fail.clone()), (40, fail.clone())],
    );
    assert_eq!(e.report.readyz.items[0].status, Status::Fail);
    assert_eq!(e.report.readyz.items[0].message, "x is fail");
    assert!(!e.report.readyz.passed());
}

#[test]
fn a_flapping_item_never_fails_with_fail_after() {
    let r = rules("[endpoints.readyz]\nfail_after = \"30s\"\n");
    let pass = snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = snapshot(vec![obs("x", Status::Fail)], vec![]);
    let mut steps = Vec::new();
    for i in 0..20u64 {
        steps.push((
            i * 10,
            if i % 2 == 0 {
                fail.clone()
            } else {
                pass.clone()
            },
        ));
        let e = run(&r, &steps);
        assert_ne!(e.report.readyz.items[0].status, Status::Fail, "flap {i}");
    }
}

#[test]
fn pass_after_holds_the_failure_until_recovery_lasts() {
    let r = rules("[endpoints.readyz]\npass_after = \"20s\"\n");
    let pass = snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = snapshot(vec![obs("x", Status::Fail)], vec![]);
    let e = run(
        &r,
        &[(0, fail.clone()), (5, pass.clone()), (15, pass.clone())],
    );
    let item = &e.report.readyz.items[0];
    assert_eq!(item.status, Status::Fail);
    assert!(
        item.text()
            .starts_with("recovered 10s ago, counts as passing after 20s"),
        "{}",
        item.text()
    );
    assert_eq!(e.next, Some(t(25).mono));
    let e = run(&r, &[(0, fail), (5, pass.clone()), (25, pass)]);
    assert_eq!(e.report.readyz.items[0].status, Status::Pass);
}

#[test]
fn require_any_and_n() {
    let snap = snapshot(
        vec![
            obs("x", Status::Fail),
            obs("y", Status::Pass),
            obs("z", Status::Fail),
        ],
        vec![],
    );
    let table = [
        ("all", false, Status::Fail),
        ("any", true, Status::Warn),
        ("1", true, Status::Warn),
        ("2", false, Status::Fail),
    ];
    for (require, passes, failing_shown) in table {
        let text = format!(
            "[[check]]\nname = \"a\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\nrequire = \"{require}\"\n\
             [[check]]\nname = \"b\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\n"
        );
        let r = Rules::new(&Config::from_toml(&text).expect("config"));
        let e = evaluate(&r, &snap, &Memory::default(), t(0));
        assert_eq!(e.report.readyz.passed(), passes, "require = {require}");
        assert_eq!(
            e.report.readyz.items[0].status, failing_shown,
            "require = {require}"
        );
        if failing_shown == Status::Warn {
            assert!(e.report.readyz.items[0]
                .text()
                .ends_with("(1 of 3 pass, 1 required)"));
        }
    }
    // Too few items to ever meet the requirement.
    let text =
        "[[check]]\nname = \"a\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\nrequire = 3\n";
    let r = Rules::new(&Config::from_toml(text).expect("config"));
    let snap = Snapshot {
        checks: BTreeMap::from([("a".to_string(), vec![obs("x", Status::Pass)].into())]),
        ..Snapshot::default()
    };
    let e = evaluate(&r, &snap, &Memory::default(), t(0));
    let last = e.report.readyz.items.last().expect("require item");
    assert_eq!(
        (&*last.name, last.status, last.message.as_str()),
        ("a/_require", Status::Fail, "1 items, 3 required")
    );
}

#[test]
fn expiry_changes_status_at_its_time_and_wakes_the_engine() {
    let r = rules("");
    let item = obs("x", Status::Pass).expiring(Expiry {
        at: Due::Mono(t(100).mono),
        status: Status::Unknown,
        message: "stale".into(),
        fact: None,
    });
    let snap = snapshot(vec![item], vec![]);
    let e = evaluate(&r, &snap, &Memory::default(), t(99));
    assert_eq!(e.report.items[0].status, Status::Pass);
    assert_eq!(e.next, Some(t(100).mono));
    let e = evaluate(&r, &snap, &e.memory, t(100));
    assert_eq!(
        (e.report.items[0].status, e.report.items[0].message.as_str()),
        (Status::Unknown, "stale")
    );
    assert_eq!(e.report.items[0].since, t(100).wall);
}

#[test]
fn since_holds_while_the_status_holds() {
    let r = rules("");
    let pass = snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = snapshot(vec![obs("x", Status::Fail)], vec![]);
    let e = run(
        &r,
        &[(0, pass.clone()), (10, pass.clone()), (20, pass.clone())],
    );
    assert_eq!(e.report.items[0].since, t(0).wall);
    assert_eq!(e.report.readyz.items[0].since, t(0).wall);
    let e = run(&r, &[(0, pass.clone()), (10, fail.clone()), (20, fail)]);
    assert_eq!(e.report.items[0].since, t(10).wall);
    assert_eq!(e.report.readyz.items[0].since, t(10).wall);
}

#[test]
fn a_configured_check_without_observations_is_unknown() {
    let r = rules("");
    let snap = Snapshot {
        checks: BTreeMap::from([("a".to_string(), vec![obs("x", Status::Pass)].into())]),
        ..Snapshot::default()
    };
    let e = evaluate(&r, &snap, &Memory::default(), t(0));
    let b = e
        .report
        .items
        .iter()
        .find(|i| i.name.check() == "b")
        .expect("check b shows");
    assert_eq!(
        (b.status, b.message.as_str()),
        (Status::Unknown, "no observation yet")
    );
    assert!(!e.report.readyz.passed());
}

#[test]
fn a_degraded_backend_item_carries_the_provider_config_message() {
    let text = "[[check]]\nname = \"backend\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\n\
                [[check]]\nname = \"pcs\"\ntype = \"provider-config\"\n";
    let r = Rules::new(&Config::from_toml(text).expect("config"));
    let snap = Snapshot {
        checks: BTreeMap::from([
            (
                "backend".to_string(),
                vec![Observation::new("pg", Status::Fail, "degraded", t(0).wall)].into(),
            ),
            (
                "pcs".to_string(),
                vec![Observation::new(
                    "pg",
                    Status::Fail,
                    "connection refused",
                    t(0).wall,
                )]
                .into(),
            ),
        ]),
        ..Snapshot::default()
    };
    let e = evaluate(&r, &snap, &Memory::default(), t(0));
    assert_eq!(e.report.items[0].message, "degraded: connection refused");
}

#[test]
fn star_does_not_cross_a_slash() {
    use klutch_health::config::Patterns;
    let checks = ["a"];
    let star = Patterns::validated(&["a*".into()], &checks).expect("pattern");
    // Through its check `a*` reaches every item; by item name alone it reaches none.
    assert!(star.matches("a", "a/x"));
    assert!(!star.matches("other", "a/x"));
    let items = Patterns::validated(&["a/*".into()], &checks).expect("pattern");
    assert!(items.matches("other", "a/x"));
    assert!(!items.matches("other", "a/x/y"), "* stops at the next /");
    assert!(
        !items.matches("a", "a"),
        "a/* names the items, not the check"
    );
    let any = Patterns::validated(&["*".into()], &checks).expect("pattern");
    assert!(any.matches("a", "a/x"));
    assert!(
        !any.matches("a/x", "a/x"),
        "`*` alone never matches an item name"
    );
    // A pattern that can reach no check is refused.
    let e = Patterns::validated(&["*x".into()], &checks).expect_err("matches nothing");
    assert!(
        e.to_string().contains("pattern \"*x\" matches no check"),
        "{e}"
    );
}

/// Rules over one check `a` with `require` and the readyz policy `policy`.
fn rules_require(require: &str, policy: &str) -> Rules {
    let text = format!(
        "[[check]]\nname = \"a\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\nrequire = {require}\n\
         [[check]]\nname = \"b\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\n\
         [endpoints.readyz]\n{policy}\n"
    );
    Rules::new(&Config::from_toml(&text).expect("valid config"))
}

#[test]
fn require_applies_when_the_items_are_included_by_an_item_pattern() {
    let snap = snapshot(
        vec![obs("x", Status::Fail), obs("y", Status::Pass)],
        vec![obs("z", Status::Pass)],
    );
    for include in ["[\"a\"]", "[\"a/*\"]", "[\"a/x\", \"a/y\"]"] {
        let r = rules_require("\"any\"", &format!("include = {include}"));
        let e = evaluate(&r, &snap, &Memory::default(), t(0));
        assert_eq!(
            shown(&e.report, Endpoint::Readyz),
            [
                ("a/x".to_string(), Status::Warn),
                ("a/y".into(), Status::Pass)
            ],
            "include = {include}: one passing item meets require = \"any\""
        );
        assert!(e.report.readyz.passed(), "include = {include}");
    }
}

#[test]
fn require_counts_only_the_items_the_endpoint_includes() {
    let snap = snapshot(
        vec![
            obs("x", Status::Pass),
            obs("y", Status::Fail),
            obs("z", Status::Fail),
        ],
        vec![],
    );
    // Two required; excluding the passing one leaves none passing of two.
    let r = rules_require("2", "exclude = [\"a/x\"]");
    let e = evaluate(&r, &snap, &Memory::default(), t(0));
    assert_eq!(
        shown(&e.report, Endpoint::Readyz),
        [
            ("a/y".to_string(), Status::Fail),
            ("a/z".into(), Status::Fail)
        ]
    );
}

#[test]
fn a_check_without_items_fails_require_any_but_not_require_all() {
    let snap = snapshot(vec![], vec![obs("z", Status::Pass)]);
    let e = evaluate(
        &rules_require("\"any\"", ""),
        &snap,
        &Memory::default(),
        t(0),
    );
    let item = &e.report.readyz.items[0];
    assert_eq!(
        (&*item.name, item.status, item.message.as_str(), item.item),
        ("a/_require", Status::Fail, "0 items, 1 required", None)
    );
    assert!(!e.report.readyz.passed());
    let e = evaluate(
        &rules_require("\"all\"", ""),
        &snap,
        &Memory::default(),
        t(0),
    );
    assert!(e.report.readyz.passed());
    assert_eq!(
        shown(&e.report, Endpoint::Readyz),
        [("b/z".to_string(), Status::Pass)]
    );
    // warn_only covers the require item too.
    let e = evaluate(
        &rules_require("\"any\"", "warn_only = [\"a\"]"),
        &snap,
        &Memory::default(),
        t(0),
    );
    assert_eq!(e.report.readyz.items[0].status, Status::Warn);
    assert!(e.report.readyz.passed());
}

#[test]
fn require_any_with_every_item_failing_fails() {
    let snap = snapshot(
        vec![obs("x", Status::Fail), obs("y", Status::Unknown)],
        vec![],
    );
    let e = evaluate(
        &rules_require("\"any\"", ""),
        &snap,
        &Memory::default(),
        t(0),
    );
    let a: Vec<_> = shown(&e.report, Endpoint::Readyz)
        .into_iter()
        .filter(|(n, _)| n.starts_with("a/"))
        .collect();
    assert_eq!(
        a,
        [
            ("a/x".to_string(), Status::Fail),
            ("a/y".into(), Status::Fail)
        ]
    );
    // Unknown counted as pass on this endpoint is enough for `any`.
    let e = evaluate(
        &rules_require("\"any\"", "unknown = \"pass\""),
        &snap,
        &Memory::default(),
        t(0),
    );
    assert_eq!(e.report.readyz.items[0].status, Status::Warn);
    assert!(e.report.readyz.items[0]
        .text()
        .ends_with("(1 of 2 pass, 1 required)"));
}

#[test]
fn each_endpoint_damps_with_its_own_fail_after() {
    let r = rules("[endpoints.healthz]\nfail_after = \"30s\"\n");
    let pass = snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = snapshot(vec![obs("x", Status::Fail)], vec![]);
    let e = run(&r, &[(0, pass), (10, fail.clone()), (20, fail)]);
    assert_eq!(e.report.readyz.items[0].status, Status::Fail);
    assert!(!e.report.readyz.passed());
    assert_eq!(e.report.healthz.items[0].status, Status::Warn);
    assert!(e.report.healthz.passed());
    assert_eq!(e.next, Some(t(40).mono));
}

#[test]
fn fail_after_damps_unknown_counted_as_failing_and_the_first_observation() {
    let r = rules("[endpoints.readyz]\nfail_after = \"30s\"\n");
    let unknown = snapshot(
        vec![obs("x", Status::Unknown)],
        vec![obs("y", Status::Pass)],
    );
    // Without history an item has passed until now: it, too, must fail for 30s to count.
    let e = run(&r, &[(0, unknown.clone())]);
    assert_eq!(e.report.readyz.items[0].status, Status::Warn);
    assert!(e.report.readyz.items[0]
        .text()
        .starts_with("failing for 0s, counts as failed after 30s: x is unknown"));
    assert_eq!(e.next, Some(t(30).mono));
    let e = run(&r, &[(0, unknown.clone()), (29, unknown.clone())]);
    assert_eq!(e.report.readyz.items[0].status, Status::Warn);
    let e = run(
        &r,
        &[(0, unknown.clone()), (29, unknown.clone()), (30, unknown)],
    );
    assert_eq!(e.report.readyz.items[0].status, Status::Fail);
    assert_eq!(e.report.readyz.items[0].message, "x is unknown");
    assert_eq!(e.next, None);
}

#[test]
fn a_failure_that_recovers_and_fails_again_restarts_the_fail_after_clock() {
    let r = rules("[endpoints.readyz]\nfail_after = \"30s\"\n");
    let pass = snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = snapshot(vec![obs("x", Status::Fail)], vec![]);
    // 25s failing, 1s passing, 25s failing: 50s of failure in all, never 30s in a row.
    let steps = [
        (0, fail.clone()),
        (25, fail.clone()),
        (26, pass.clone()),
        (27, fail.clone()),
        (52, fail.clone()),
    ];
    let e = run(&r, &steps);
    assert_eq!(e.report.readyz.items[0].status, Status::Warn);
    assert!(e.report.readyz.items[0]
        .text()
        .starts_with("failing for 25s"));
    assert_eq!(e.next, Some(t(57).mono));
}

#[test]
fn pass_after_a_relapse_restarts_the_recovery_clock() {
    let r = rules("[endpoints.readyz]\npass_after = \"20s\"\n");
    let pass = snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = snapshot(vec![obs("x", Status::Fail)], vec![]);
    let steps = [
        (0, fail.clone()),
        (5, pass.clone()),
        (20, fail.clone()),
        (21, pass.clone()),
        (40, pass.clone()),
    ];
    let e = run(&r, &steps);
    assert_eq!(e.report.readyz.items[0].status, Status::Fail);
    assert!(e.report.readyz.items[0]
        .text()
        .starts_with("recovered 19s ago, counts as passing after 20s"));
    assert_eq!(e.next, Some(t(41).mono));
    let mut more = steps.to_vec();
    more.push((41, pass));
    assert_eq!(run(&r, &more).report.readyz.items[0].status, Status::Pass);
}

#[test]
fn the_earliest_expiry_wakes_the_engine_and_the_latest_passed_applies() {
    let r = rules("");
    let item = obs("x", Status::Pass)
        .expiring(Expiry {
            // A wall-clock deadline (a timestamp from outside) and a monotonic one order together.
            at: Due::Wall(t(200).wall),
            status: Status::Fail,
            message: "gone".into(),
            fact: None,
        })
        .expiring(Expiry {
            at: Due::Mono(t(100).mono),
            status: Status::Unknown,
            message: "stale".into(),
            fact: None,
        });
    let snap = snapshot(vec![item], vec![]);
    let steps = |secs: &[u64]| -> Vec<(u64, Snapshot)> {
        secs.iter().map(|s| (*s, snap.clone())).collect()
    };
    let e = run(&r, &steps(&[0]));
    assert_eq!(e.next, Some(t(100).mono));
    let e = run(&r, &steps(&[0, 100]));
    assert_eq!(
        (e.report.items[0].status, e.report.items[0].message.as_str()),
        (Status::Unknown, "stale")
    );
    assert_eq!(e.next, Some(t(200).mono));
    let e = run(&r, &steps(&[0, 100, 250]));
    assert_eq!(
        (e.report.items[0].status, e.report.items[0].message.as_str()),
        (Status::Fail, "gone")
    );
    assert_eq!(e.report.items[0].since, t(250).wall);
    assert_eq!(e.next, None);
}

#[test]
fn the_endpoint_since_follows_what_the_endpoint_shows() {
    let r = rules("[endpoints.readyz]\nfail_after = \"30s\"\n");
    let pass = snapshot(vec![obs("x", Status::Pass)], vec![]);
    let fail = snapshot(vec![obs("x", Status::Fail)], vec![]);
    // Shown as warn from 10s (its message changes each time), as fail from 40s.
    let steps = [(0, pass.clone()), (10, fail.clone()), (20, fail.clone())];
    let e = run(&r, &steps);
    assert_eq!(e.report.readyz.items[0].status, Status::Warn);
    assert_eq!(e.report.readyz.items[0].since, t(10).wall);
    assert_eq!(
        e.report.items[0].since,
        t(10).wall,
        "the observed status changed at 10s"
    );
    let mut steps = steps.to_vec();
    steps.push((40, fail.clone()));
    steps.push((50, fail));
    let e = run(&r, &steps);
    assert_eq!(e.report.readyz.items[0].status, Status::Fail);
    assert_eq!(e.report.readyz.items[0].since, t(40).wall);
    assert_eq!(e.report.items[0].since, t(10).wall);
    // The item's observed `since` does not move when only its message changes.
    let other = snapshot(
        vec![Observation::new(
            "x",
            Status::Fail,
            "another reason",
            t(60).wall,
        )],
        vec![],
    );
    steps.push((60, other));
    let e = run(&r, &steps);
    assert_eq!(e.report.items[0].since, t(10).wall);
    assert_eq!(e.report.readyz.items[0].since, t(40).wall);
}

#[test]
fn the_provider_config_message_is_added_only_to_a_failing_backend_item() {
    let text = "[[check]]\nname = \"backend\"\ntype = \"backend-status\"\nurl = \"http://x:1/\"\n\
                [[check]]\nname = \"pcs\"\ntype = \"provider-config\"\n";
    let r = Rules::new(&Config::from_toml(text).expect("config"));
    let snap = |backend: Status, pc: Status| Snapshot {
        checks: BTreeMap::from([
            (
                "backend".to_string(),
                vec![
                    Observation::new("pg", backend, "degraded", t(0).wall),
                    Observation::new("other", Status::Fail, "degraded", t(0).wall),
                ]
                .into(),
            ),
            (
                "pcs".to_string(),
                vec![Observation::new("pg", pc, "connection refused", t(0).wall)].into(),
            ),
        ]),
        ..Snapshot::default()
    };
    let message = |s: &Snapshot, name: &str| {
        let e = evaluate(&r, s, &Memory::default(), t(0));
        let i = e
            .report
            .items
            .iter()
            .find(|i| &*i.name == name)
            .expect("item")
            .clone();
        i.message
    };
    let s = snap(Status::Fail, Status::Fail);
    assert_eq!(message(&s, "backend/pg"), "degraded: connection refused");
    assert_eq!(
        message(&s, "backend/other"),
        "degraded",
        "only the ProviderConfig of the same name"
    );
    assert_eq!(
        message(&s, "pcs/pg"),
        "connection refused",
        "the provider-config item is not annotated"
    );
    // A ProviderConfig that is not failing adds nothing.
    assert_eq!(
        message(&snap(Status::Fail, Status::Unknown), "backend/pg"),
        "degraded"
    );
}

#[test]
fn evaluation_is_pure() {
    let r = rules("[endpoints.readyz]\nfail_after = \"30s\"\n");
    let snap = snapshot(vec![obs("x", Status::Fail)], vec![obs("y", Status::Pass)]);
    let first = evaluate(&r, &snap, &Memory::default(), t(5));
    let again = evaluate(&r, &snap, &Memory::default(), t(5));
    assert_eq!(first.report, again.report);
    assert_eq!(first.memory, again.memory);
    assert_eq!(first.next, again.next);
}

/// A `pods` check that names its package (`package = "providers/provider-anynines"`) passes with no pod
/// while that package is scaled to zero, and fails as before in every other case.
#[test]
fn no_pod_of_a_package_scaled_to_zero_passes_and_fails_otherwise() {
    use klutch_health::signals::Fact;
    let config = |package: &str| {
        let text = format!(
            "[[check]]\nname = \"providers\"\ntype = \"crossplane-package\"\n\
             [[check]]\nname = \"provider-pods\"\ntype = \"pods\"\n{package}"
        );
        Rules::new(&Config::from_toml(&text).expect("config"))
    };
    let linked = config("package = \"providers/provider-anynines\"\n");
    let scaled = || {
        Observation::new(
            "provider-anynines",
            Status::Pass,
            "scaled to zero until a ManagedResourceDefinition is active",
            t(0).wall,
        )
        .notable()
        .with_fact(Fact::ScaledToZero)
    };
    let no_pod = || {
        Observation::new("_none", Status::Fail, "no pod matches sel", t(0).wall)
            .with_fact(Fact::NoPod)
    };
    let snap = |package: Vec<Observation>, pods: Vec<Observation>| Snapshot {
        checks: BTreeMap::from([
            ("providers".to_string(), package.into()),
            ("provider-pods".to_string(), pods.into()),
        ]),
        ..Snapshot::default()
    };
    let pods_item = |rules: &Rules, s: &Snapshot, secs: u64| {
        let e = evaluate(rules, s, &Memory::default(), t(secs));
        let i = e
            .report
            .items
            .iter()
            .find(|i| i.name.check() == "provider-pods")
            .expect("item")
            .clone();
        (i.status, i.message, i.detail.is_some())
    };
    assert_eq!(
        pods_item(&linked, &snap(vec![scaled()], vec![no_pod()]), 0),
        (
            Status::Pass,
            "no pod, as none should run: providers/provider-anynines is scaled to zero until a \
             ManagedResourceDefinition is active"
                .to_string(),
            true
        )
    );
    let failing = (Status::Fail, "no pod matches sel".to_string(), false);
    // The package runs (a plain pass), is absent, or is another package: no pod fails.
    let running = Observation::new("provider-anynines", Status::Pass, "installed", t(0).wall);
    let mut other = scaled();
    other.item = "provider-kubernetes".into();
    for package in [vec![running], vec![], vec![other]] {
        assert_eq!(
            pods_item(&linked, &snap(package.clone(), vec![no_pod()]), 0),
            failing,
            "{package:?}"
        );
    }
    // Without the key there is no link.
    assert_eq!(
        pods_item(&config(""), &snap(vec![scaled()], vec![no_pod()]), 0),
        failing
    );
    // A scaled-to-zero package whose watch went stale (unknown by now) excuses nothing.
    let stale = scaled().expiring(Expiry {
        at: Due::Mono(t(100).mono),
        status: Status::Unknown,
        message: "watch broken".into(),
        fact: None,
    });
    let s = snap(vec![stale], vec![no_pod()]);
    assert_eq!(pods_item(&linked, &s, 50).0, Status::Pass);
    assert_eq!(pods_item(&linked, &s, 150), failing);
    // A pod that is there but not Ready fails whatever the package says.
    let not_ready = Observation::new("provider-anynines-x", Status::Fail, "not ready", t(0).wall);
    assert_eq!(
        pods_item(&linked, &snap(vec![scaled()], vec![not_ready]), 0).0,
        Status::Fail
    );
}
