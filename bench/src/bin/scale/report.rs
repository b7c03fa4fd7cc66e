//! The scale section of BENCHMARKS.md, written from one run's results.

use std::fmt::Write;

use crate::plan;
use crate::procs::mib;
use crate::storm::StormResult;
use crate::{Latency, Results, SizeResult, Start};

/// The goals at 50 000 managed resources: memory, the first complete verdict, change-to-verdict latency.
const GOAL_RSS_MIB: f64 = 128.0;
const GOAL_FIRST_MS: f64 = 2_000.0;
/// After an API server restart, to the verdict showing a change made then.
const GOAL_RELIST_MS: f64 = 5_000.0;
const GOAL_CPU_US: f64 = 50.0;
/// Change-to-verdict p99 above a bare watch's of the same changes (the API server's delivery, the floor).
const GOAL_ABOVE_FLOOR_MS: f64 = 2.0;
/// The churn's row of the bare watch (main.rs): the API server's part of every change-to-verdict figure.
pub const FLOOR: &str = "a bare watch (the API server's part)";

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

/// One row of a change-to-verdict table: `shown by | changes | p50 | p99 | max | never shown`.
fn latency_row(s: &mut String, shown_by: &str, l: &Latency) {
    let _ = writeln!(
        s,
        "| {shown_by} | {} | {} | {} | {} | {} |",
        l.changes,
        ms(l.p50_ms),
        ms(l.p99_ms),
        ms(l.max_ms),
        l.missing
    );
}

fn start_cells(s: &Start) -> String {
    format!(
        "{:.0} | {:.2} | {:.1} ({:.1}) | {:.1} | {:.2} | {} B, {:.1} ms",
        s.first_complete_ms,
        s.cpu_to_first_s,
        mib(s.memory.rss_kib),
        mib(s.memory.anon_kib),
        mib(s.memory.peak_kib),
        s.idle_cpu_percent,
        s.scrape_bytes,
        s.scrape_ms
    )
}

/// Heap bytes per managed resource between the smallest and the largest size (anonymous RSS: what grows).
fn per_object(sizes: &[SizeResult], of: impl Fn(&SizeResult) -> Option<u64>) -> Option<f64> {
    let (first, last) = (sizes.first()?, sizes.last()?);
    let objects = last.managed.checked_sub(first.managed).filter(|n| *n > 0)? as f64;
    let grown = of(last)? as f64 - of(first)? as f64;
    Some(grown * 1024.0 / objects)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Scale: managed resources on a real control plane\n\n\
Reproduce with `bash bench/run` (this section alone: `BENCH_ONLY=scale bash bench/run`). A real kube-apiserver \
v1.37.2 with etcd (`controlplane/build.sh`), the simulator's Klutch estate mirrored into it, and N managed \
resources seeded through the API (create, then the `/status` subresource; deleting ones deleted behind their \
finalizer; 32 requests in flight): 40 % ServiceInstances, 30 % ServiceBindings (one per instance), 25 % Backups \
(three per instance: the newest judged, the older two superseded), 5 % Restores; per 1 000 of a kind 5 failing \
(`Synced=False ReconcileError`), 10 creating, 1 paused, 1 deleting, 2 with a broker operation pending \
(instances), the rest ready; instances and bindings on `postgresql-service-broker`, backups and restores on \
`postgresql-backup-manager` (the estate's ProviderConfigs). klutch-health (release build, the shipped \
`config.toml`) and kube-state-metrics v2.20.0 (`controlplane/build.sh bench/ksm`, custom-resource-state config \
`bench/ksm/managed-resources.yaml`: a series per object and condition) were started one after the other at \
each size on the same objects, both as the API server's admin. Load average {} before the run, {} after \
({} cores, shared with other work: compare within this table).\n",
        r.load_before, r.load_after, r.cores
    );
    let _ = writeln!(
        s,
        "First complete: from process start to the first answer that counts every object (klutch-health: \
`klutch_health_managed_resources` sums to what the API server lists and `/readyz` answers 200; \
kube-state-metrics: a `Ready` series for every object on `/metrics`). Memory 3 s later (RSS, anonymous part \
in brackets), peak RSS since start, idle CPU over the next 5 s, then one `/metrics` scrape.\n"
    );
    let _ = writeln!(
        s,
        "| managed resources (split) | seeded in s | klutch-health: first complete ms | CPU s to it | RSS MiB (anon) | peak MiB | idle CPU % | /metrics | kube-state-metrics: first complete ms | CPU s to it | RSS MiB (anon) | peak MiB | idle CPU % | /metrics |\n\
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for z in &r.sizes {
        let ksm = z
            .ksm
            .as_ref()
            .map_or("– | – | – | – | – | –".into(), start_cells);
        let _ = writeln!(
            s,
            "| {} ({}) | {:.1} | {} | {} |",
            z.managed,
            z.split.map(|n| n.to_string()).join(" / "),
            z.seed_seconds,
            start_cells(&z.klutch),
            ksm
        );
    }
    for z in &r.sizes {
        if let Some(m) = &z.klutch.mismatch {
            let _ = writeln!(
                s,
                "\n**At {}, klutch-health's counts disagree with the API server:** {m}",
                z.managed
            );
        }
    }
    let loads: Vec<&SizeResult> = r
        .sizes
        .iter()
        .filter(|z| z.klutch.apiserver.is_some())
        .collect();
    if !loads.is_empty() {
        let _ = writeln!(
            s,
            "\nWhat each tool's first list cost kube-apiserver: its CPU from the tool's start to the tool's first \
complete answer, and its peak RSS over that time (`VmHWM` reset at the tool's start) above its RSS at the start. \
klutch-health streams its lists from the API server's watch cache (`sendInitialEvents`); kube-state-metrics \
lists in pages.\n\n\
| managed resources | klutch-health: API server CPU s | its peak RSS above the start MiB | kube-state-metrics: API server CPU s | its peak RSS above the start MiB |\n|---|---|---|---|---|"
        );
        let cells = |l: Option<&crate::procs::ServerLoad>| match l {
            Some(l) => format!(
                "{:.2} | {:+.1}{}",
                l.cpu_s,
                (l.peak_kib as f64 - l.rss_before_kib as f64) / 1024.0,
                if l.peak_reset {
                    ""
                } else {
                    " (peak since its start)"
                }
            ),
            None => "– | –".into(),
        };
        for z in loads {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                z.managed,
                cells(z.klutch.apiserver.as_ref()),
                cells(z.ksm.as_ref().and_then(|k| k.apiserver.as_ref()))
            );
        }
    }
    let k_per = per_object(&r.sizes, |z| Some(z.klutch.memory.anon_kib));
    let s_per = per_object(&r.sizes, |z| z.ksm.as_ref().map(|k| k.memory.anon_kib));
    let _ = writeln!(
        s,
        "\nPer managed resource (anonymous RSS from the smallest to the largest size): klutch-health **{}** bytes, \
kube-state-metrics **{}** bytes.",
        k_per.map_or("–".into(), |b| format!("{b:.0}")),
        s_per.map_or("–".into(), |b| format!("{b:.0}"))
    );
    if let Some(c) = &r.churn {
        let _ = writeln!(
            s,
            "\n### Churn: {} status changes per second at {} managed resources\n\n\
A change is a merge patch of one ready resource's `/status` to `Synced=False ReconcileError` (or back), timed \
just before its request is sent, so every figure includes the API server's write, etcd and the watch stream. \
Each phase breaks a fresh set of resources at that rate for {} s, then heals them. klutch-health is polled every \
2 ms (`/metrics` and `/readyz/managed-resources?format=json`): its counts fall (or rise) by one per change of a \
kind, so the m-th change of a kind shows once that kind's ready count has moved m times. kube-state-metrics is \
scraped back to back: a change shows once that object's `Synced` series has its new value. A change counts as \
shown when the poller *holds* an answer that shows it (its response ended), so a slow scrape costs its full length. \
Beside them, with klutch-health polled alone, a bare watch of the same kinds in the bench (from the collections' \
versions before the phase, doing nothing else) times when each change arrives: the API server's part, which \
neither tool can beat.\n",
            c.rate,
            r.sizes.last().map_or(0, |z| z.managed),
            c.phase_seconds / 2
        );
        let _ = writeln!(
            s,
            "CPU per change (a quiet phase of {} changes, nothing polled; CPU over the phase less the idle rate): \
klutch-health **{:.0} µs**, kube-state-metrics **{}**.\n",
            c.quiet_changes,
            c.klutch_us_per_event,
            c.ksm_us_per_event.map_or("–".into(), |u| format!("{u:.0} µs"))
        );
        let _ = writeln!(
            s,
            "| shown by | changes | p50 ms | p99 ms | max ms | never shown |\n|---|---|---|---|---|---|"
        );
        for l in &c.alone {
            latency_row(
                &mut s,
                &format!("{} (klutch-health polled alone)", l.what),
                l,
            );
        }
        for l in &c.side_by_side {
            latency_row(&mut s, &format!("{} (both polled)", l.what), l);
        }
        if let Some(scrape) = c.ksm_scrape_ms {
            let _ = writeln!(
                s,
                "\nkube-state-metrics' scrapes took {scrape:.0} ms on average during that phase; a Prometheus \
scraping it every 30 s (kube-prometheus' default) and an alert rule evaluated every 30 s add up to a minute \
more before anyone is told."
            );
        }
        let _ = writeln!(
            s,
            "\nAfter the churn: klutch-health RSS {:.1} MiB (peak {:.1} MiB){}.",
            mib(c.klutch_memory.rss_kib),
            mib(c.klutch_memory.peak_kib),
            c.ksm_memory.map_or(String::new(), |m| format!(
                ", kube-state-metrics RSS {:.1} MiB (peak {:.1} MiB)",
                mib(m.rss_kib),
                mib(m.peak_kib)
            ))
        );
    }
    if let Some(x) = &r.relist {
        let _ = writeln!(
            s,
            "\n### One relist at {} managed resources\n\n\
etcd compacted and kube-apiserver restarted: every watch's resume is answered `410 Gone` (or the evidence \
probe saw the server down and restarted them), so everything is listed again while the old state is still \
held. kube-apiserver answered `/readyz` {:.1} s after its restart; one resource broken right then showed in \
klutch-health's verdict {:.2} s after its write ({:.0} watch restarts counted; every object counted again and \
`/readyz` 200 afterwards: {}). Peak RSS since its start (start-up, churn and this relist): **{:.1} MiB**{}.",
            r.sizes.last().map_or(0, |z| z.managed),
            x.apiserver_ready_ms / 1000.0,
            x.change_shown_ms / 1000.0,
            x.watch_restarts,
            if x.complete { "yes" } else { "**no**" },
            mib(x.klutch_memory.peak_kib),
            x.ksm_memory.map_or(String::new(), |m| format!(
                "; kube-state-metrics' peak: {:.1} MiB",
                mib(m.peak_kib)
            ))
        );
        if let Some(f) = x.floor_shown_ms {
            let _ = writeln!(
                s,
                "\nThe same change reached a bare watch opened just before it (the restarted server's part: its \
watch cache filled from etcd first) {:.2} s after its write: klutch-health showed it {:.2} s after the bare watch.",
                f / 1000.0,
                (x.change_shown_ms - f) / 1000.0
            );
        }
        if let (Some(cpu_s), Some(peak_kib)) = (x.apiserver_cpu_s, x.apiserver_peak_kib) {
            let _ = writeln!(
                s,
                "\nkube-apiserver from its restart until klutch-health was complete again (its own start, the \
watch cache filled from etcd, and both tools' relists together): {:.1} s of CPU, peak RSS {:.1} MiB.",
                cpu_s,
                mib(peak_kib)
            );
        }
    }
    if let Some(z) = r.sizes.iter().find(|z| z.managed == 50_000) {
        let peak = c_peak(r).max(z.klutch.memory.peak_kib);
        let alone = |what: &str| {
            r.churn
                .as_ref()
                .and_then(|c| c.alone.iter().find(|l| l.what == what))
                .and_then(|l| l.p99_ms)
        };
        let (p99, floor) = (alone("klutch-health verdict"), alone(FLOOR));
        let relist = r.relist.as_ref().map(|x| x.change_shown_ms);
        let cpu = r.churn.as_ref().map(|c| c.klutch_us_per_event);
        let _ = writeln!(
            s,
            "\nGoals at 50 000: RSS ≤ {GOAL_RSS_MIB} MiB — {} (peak {:.1} MiB); first complete verdict ≤ {:.0} s — {} \
({:.1} s); after an API server restart, a change in the verdict ≤ {:.0} s — {} ({}); CPU per change ≤ \
{GOAL_CPU_US} µs — {} ({}); change-to-verdict p99 at most {GOAL_ABOVE_FLOOR_MS} ms above a bare watch of the \
same changes (the API server's delivery, which no client beats) — {} ({} ms against {} ms).",
            verdict(mib(peak) <= GOAL_RSS_MIB),
            mib(peak),
            GOAL_FIRST_MS / 1000.0,
            verdict(z.klutch.first_complete_ms <= GOAL_FIRST_MS),
            z.klutch.first_complete_ms / 1000.0,
            GOAL_RELIST_MS / 1000.0,
            verdict(relist.is_some_and(|x| x <= GOAL_RELIST_MS)),
            relist.map_or("not measured".into(), |x| format!("{:.2} s", x / 1000.0)),
            verdict(cpu.is_some_and(|c| c <= GOAL_CPU_US)),
            cpu.map_or("not measured".into(), |c| format!("{c:.0} µs")),
            verdict(p99.zip(floor).is_some_and(|(p, f)| p <= f + GOAL_ABOVE_FLOOR_MS)),
            ms(p99),
            ms(floor)
        );
    }
    if let Some(x) = &r.storm {
        storm_section(&mut s, r, x);
    }
    s
}

/// The storm's goals (stated beside the figures, never asserted): klutch-health's CPU and memory during it,
/// every probe answered, its `/readyz` p99 against the static server's, change-to-verdict against the floor.
const STORM_CPU_CORES: f64 = 0.25;
const STORM_RSS_MIB: f64 = 64.0;
const STORM_ABOVE_FLOOR_MS: f64 = 2.0;

/// The bench/run command that reproduces this run's storm: the sizes and the churn named where they are not
/// bench/run's defaults.
fn storm_command(r: &Results, x: &StormResult) -> String {
    let mut env = String::from("BENCH_ONLY=scale");
    let sizes: Vec<String> = r.sizes.iter().map(|z| z.managed.to_string()).collect();
    if sizes.join(",") != "0,1000,10000,50000" {
        let _ = write!(env, " BENCH_SCALE_SIZES={}", sizes.join(","));
    }
    if let Some(c) = r
        .churn
        .as_ref()
        .filter(|c| (c.rate, c.phase_seconds) != (100, 20))
    {
        let _ = write!(env, " BENCH_CHURN={},{}", c.rate, c.phase_seconds);
    }
    format!(
        "{env} BENCH_STORM={},{} bash bench/run",
        x.backups, x.seconds
    )
}

fn storm_section(s: &mut String, r: &Results, x: &StormResult) {
    let per_second =
        x.backups as f64 / (x.seconds as f64 - plan::STORM_LIFETIME_MS as f64 / 1000.0).max(1.0);
    let _ = writeln!(
        s,
        "\n### The midnight backup storm\n\n\
Reproduce with `{}` (the scale binary: `--storm-backups {} \
--storm-seconds {}`). At {} managed resources, after the churn and the relist (kube-state-metrics stopped): {} \
Backups created and completed within {} s through the API — each one created without a status, then its \
`/status` written `queued` (`Ready=False Creating`, `Synced=True`), {:.0} s later `running` (the same, with a \
message), and {:.0}–{:.0} s after that `done` (`Ready=True Available`, `Synced=True`); one in {} ends failed \
instead (`Synced=False ReconcileError`, {} here). Their starts are evenly spaced over the first {:.0} s (about {:.0} \
Backups started per second, {} requests in all, at most {} in flight; the last one was answered {:.1} s after \
the first was sent). Each is the first Backup of a ready ServiceInstance that had none, on \
`postgresql-backup-manager`: every one is judged and none supersedes another, so the Backups' ready count rises \
by exactly one per completed Backup. Load average {} as the storm began, {} as it ended.\n",
        storm_command(r, x),
        x.backups,
        x.seconds,
        x.managed,
        x.backups,
        x.seconds,
        plan::STORM_QUEUED_MS as f64 / 1000.0,
        plan::STORM_RUN_MS as f64 / 1000.0,
        (plan::STORM_RUN_MS + plan::STORM_RUN_SPREAD_MS) as f64 / 1000.0,
        plan::STORM_FAIL_EVERY,
        x.failed,
        x.seconds as f64 - plan::STORM_LIFETIME_MS as f64 / 1000.0,
        per_second,
        x.writes,
        crate::seed::PARALLEL,
        x.writes_seconds,
        x.load_before,
        x.load_after
    );
    let _ = writeln!(
        s,
        "Meanwhile plain `/readyz` was probed at a fixed {} requests per second (open loop, {} keep-alive \
connections, from the bench itself), alternating every {:.2} s between klutch-health and the static hyper \
server (`bench/src/bin/static-server.rs`, the same bytes, status and Content-Type): {} slices, so each was \
loaded for half of the storm under the same writes. Latency is from each request's send to its last byte (no \
correction for coordinated omission, as `oha` measures by default); answered means any answer within 10 s.\n",
        x.probe_rate,
        crate::storm::PROBE_CONNECTIONS,
        x.slice_seconds,
        x.slices
    );
    let _ = writeln!(
        s,
        "| server | probes | p50 ms | p99 ms | max ms | answered % | answered, not 200 |\n|---|---|---|---|---|---|---|"
    );
    for p in &x.probes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} | {} |",
            p.what,
            p.sent,
            ms3(p.p50_ms),
            ms3(p.p99_ms),
            ms3(p.max_ms),
            p.answered_percent(),
            p.not_200
        );
    }
    let _ = writeln!(
        s,
        "\nChange-to-verdict of each completed Backup, from its `done` write (timed just before the request is \
sent) to klutch-health's `/metrics` (polled every 2 ms) counting it ready, as in the churn; beside it a bare watch \
of the Backups in the bench times when each `Ready=True` arrives (the API server's part):\n"
    );
    let _ = writeln!(
        s,
        "| shown by | completed Backups | p50 ms | p99 ms | max ms | never shown |\n|---|---|---|---|---|---|"
    );
    for l in &x.latency {
        latency_row(s, &l.what, l);
    }
    let peak_words = if x.peak_reset {
        "peak during the storm (`VmHWM` reset as it began)"
    } else {
        "peak since start (`VmHWM` could not be reset)"
    };
    let _ = writeln!(
        s,
        "\nklutch-health during the storm: CPU **{:.3} cores** on average from the first write until every write was \
answered and the load ended ({:.3} in the slices it was probed, {:.3} in the static server's: the watch's part), \
including its answers to the 2 ms poller; RSS {:.1} MiB at the end, \
{peak_words} **{:.1} MiB**. Its Backups counts afterwards: {}.",
        x.klutch_cpu_cores,
        x.klutch_cpu_probed_cores,
        x.klutch_cpu_unprobed_cores,
        mib(x.klutch_memory.rss_kib),
        mib(x.klutch_memory.peak_kib),
        x.mismatch.as_deref().map_or(
            "every completed and failed Backup counted, none left creating".to_string(),
            |m| format!("**they disagree with what was written**: {m}")
        )
    );
    let row = |what: &str| {
        x.latency
            .iter()
            .find(|l| l.what == what)
            .and_then(|l| l.p99_ms)
    };
    let (verdict_p99, floor_p99) = (row("klutch-health metric"), row(FLOOR));
    let (k, st) = (x.probes.first(), x.probes.get(1));
    let all_answered = x.probes.first().is_some_and(|p| p.answered == p.sent);
    let p99_of = |p: Option<&crate::storm::ProbeLoad>| p.and_then(|p| p.p99_ms);
    let _ = writeln!(
        s,
        "\nGoals for the storm: average CPU ≤ {STORM_CPU_CORES} core — {} ({:.3}); RSS ≤ {STORM_RSS_MIB} MiB — {} \
(peak {:.1} MiB); every probe answered — {} ({:.2} %); `/readyz` p99 no worse than the static server's in the \
same run — {} ({} ms against {} ms); change-to-verdict p99 at most {STORM_ABOVE_FLOOR_MS} ms above the bare \
watch's — {} ({} ms against {} ms).",
        verdict(x.klutch_cpu_cores <= STORM_CPU_CORES),
        x.klutch_cpu_cores,
        verdict(mib(x.klutch_memory.peak_kib) <= STORM_RSS_MIB),
        mib(x.klutch_memory.peak_kib),
        verdict(all_answered),
        k.map_or(0.0, |p| p.answered_percent()),
        verdict(matches!((p99_of(k), p99_of(st)), (Some(a), Some(b)) if a <= b)),
        ms3(p99_of(k)),
        ms3(p99_of(st)),
        verdict(matches!((verdict_p99, floor_p99), (Some(a), Some(b)) if a <= b + STORM_ABOVE_FLOOR_MS)),
        ms(verdict_p99),
        ms(floor_p99)
    );
    let _ = writeln!(
        s,
        "\nNot measured here: Backups that supersede an older one of their instance (a second night: the ready count \
would not move, so completions could not be told from the counts); the verdict (`/readyz/managed-resources`) \
during the storm, only the metric (the churn compares both); how long the failed Backups took to show; \
kube-state-metrics (stopped); the probes' figures with `oha` (the probe path below uses it, without a storm)."
    );
}

fn ms3(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3}"))
}

/// klutch-health's peak RSS by the end of the churn and the relist (0 without them).
fn c_peak(r: &Results) -> u64 {
    let churn = r.churn.as_ref().map_or(0, |c| c.klutch_memory.peak_kib);
    let relist = r.relist.as_ref().map_or(0, |x| x.klutch_memory.peak_kib);
    churn.max(relist)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procs::Memory;
    use crate::{ChurnResult, RelistResult};

    fn start(first: f64, anon_mib: u64) -> Start {
        Start {
            first_complete_ms: first,
            cpu_to_first_s: 1.5,
            memory: Memory {
                rss_kib: (anon_mib + 9) * 1024,
                peak_kib: (anon_mib + 20) * 1024,
                anon_kib: anon_mib * 1024,
                file_kib: 9 * 1024,
            },
            idle_cpu_percent: 0.2,
            scrape_ms: 1.0,
            scrape_bytes: 30_000,
            mismatch: None,
            apiserver: Some(crate::procs::ServerLoad {
                cpu_s: first / 1000.0,
                rss_before_kib: 300 * 1024,
                peak_kib: (300 + anon_mib) * 1024,
                peak_reset: true,
            }),
        }
    }

    fn size(n: usize, k_anon: u64, s_anon: u64) -> SizeResult {
        SizeResult {
            managed: n,
            split: crate::plan::Split::of(n).0,
            listed: n as u64 + 4,
            seed_seconds: 1.0,
            klutch: start(500.0 + n as f64 / 10.0, k_anon),
            ksm: Some(start(900.0, s_anon)),
        }
    }

    #[test]
    fn the_section_states_the_figures_per_object_and_the_goals() {
        let lat = |what: &str, p99: f64| Latency {
            what: what.into(),
            changes: 2000,
            p50_ms: Some(p99 / 4.0),
            p99_ms: Some(p99),
            max_ms: Some(p99 * 2.0),
            missing: 0,
        };
        let r = Results {
            load_before: "0.50 0.40 0.30".into(),
            load_after: "1.00 0.80 0.60".into(),
            cores: 2,
            sizes: vec![size(0, 2, 20), size(50_000, 52, 520)],
            churn: Some(ChurnResult {
                rate: 100,
                phase_seconds: 20,
                klutch_us_per_event: 42.0,
                ksm_us_per_event: Some(420.0),
                quiet_changes: 2000,
                alone: vec![
                    // The goal is the verdict's: never another row's p99, however large.
                    lat(FLOOR, 60.0),
                    lat("klutch-health metric", 12.0),
                    lat("klutch-health verdict", 14.0),
                ],
                side_by_side: vec![lat("kube-state-metrics /metrics", 1800.0)],
                klutch_memory: Memory {
                    rss_kib: 60 * 1024,
                    peak_kib: 150 * 1024,
                    anon_kib: 0,
                    file_kib: 0,
                },
                ksm_memory: None,
                ksm_scrape_ms: Some(900.0),
            }),
            relist: Some(RelistResult {
                apiserver_ready_ms: 2100.0,
                change_shown_ms: 420.0,
                floor_shown_ms: Some(400.0),
                watch_restarts: 4.0,
                complete: true,
                klutch_memory: Memory {
                    rss_kib: 70 * 1024,
                    peak_kib: 90 * 1024,
                    anon_kib: 0,
                    file_kib: 0,
                },
                ksm_memory: None,
                apiserver_cpu_s: Some(12.5),
                apiserver_peak_kib: Some(800 * 1024),
            }),
            storm: Some(StormResult {
                backups: 10_000,
                seconds: 60,
                managed: 50_000,
                failed: 50,
                writes: 40_000,
                writes_seconds: 61.5,
                slices: 12,
                slice_seconds: 5.0,
                probe_rate: 5000,
                probes: vec![
                    crate::storm::ProbeLoad {
                        what: "klutch-health `/readyz`".into(),
                        sent: 150_000,
                        answered: 150_000,
                        not_200: 0,
                        p50_ms: Some(0.21),
                        p99_ms: Some(1.234),
                        max_ms: Some(9.0),
                    },
                    crate::storm::ProbeLoad {
                        what: "static hyper server, same bytes".into(),
                        sent: 150_000,
                        answered: 150_000,
                        not_200: 0,
                        p50_ms: Some(0.2),
                        p99_ms: Some(1.5),
                        max_ms: Some(8.0),
                    },
                ],
                klutch_cpu_cores: 0.31,
                klutch_cpu_probed_cores: 0.5,
                klutch_cpu_unprobed_cores: 0.12,
                klutch_memory: Memory {
                    rss_kib: 50 * 1024,
                    peak_kib: 60 * 1024,
                    anon_kib: 0,
                    file_kib: 0,
                },
                peak_reset: true,
                latency: vec![lat(FLOOR, 4.0), lat("klutch-health metric", 6.0)],
                mismatch: None,
                load_before: "1.00 0.90 0.80".into(),
                load_after: "2.00 1.00 0.90".into(),
            }),
        };
        let md = markdown(&r);
        // `--render` writes the same section from a run's results.json.
        let back: Results = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(markdown(&back), md);
        // 50 MiB more anonymous memory for 50 000 objects: 1 049 bytes each (500 MiB: 10 486).
        assert!(
            md.contains("klutch-health **1049** bytes, kube-state-metrics **10486** bytes"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 50000 (20000 / 15000 / 12500 / 2500) | 1.0 | 5500 | 1.50 | 61.0 (52.0) | 72.0 |"
            ),
            "{md}"
        );
        // What each tool's list cost the API server, and the restart's.
        assert!(
            md.contains("| 50000 | 5.50 | +52.0 | 0.90 | +520.0 |"),
            "{md}"
        );
        assert!(
            md.contains("its watch cache filled from etcd first) 0.40 s after its write: klutch-health showed it 0.02 s after the bare watch."),
            "{md}"
        );
        assert!(
            md.contains("both tools' relists together): 12.5 s of CPU, peak RSS 800.0 MiB."),
            "{md}"
        );
        assert!(
            md.contains("klutch-health **42 µs**, kube-state-metrics **420 µs**"),
            "{md}"
        );
        assert!(md.contains("| klutch-health verdict (klutch-health polled alone) | 2000 | 3.5 | 14.0 | 28.0 | 0 |"), "{md}");
        // The peak after the churn (150 MiB) misses the memory goal; the rest is met.
        assert!(
            md.contains("RSS ≤ 128 MiB — **missed** (peak 150.0 MiB)"),
            "{md}"
        );
        assert!(
            md.contains("first complete verdict ≤ 2 s — **missed** (5.5 s)"),
            "{md}"
        );
        assert!(
            md.contains("CPU per change ≤ 50 µs — **met** (42 µs)"),
            "{md}"
        );
        assert!(
            md.contains("above a bare watch of the same changes (the API server's delivery, which no client beats) — **met** (14.0 ms against 60.0 ms)"),
            "{md}"
        );
        // The storm: its command, its tables and its goals, each met or missed on its own.
        assert!(
            md.contains("### The midnight backup storm\n\nReproduce with `BENCH_ONLY=scale BENCH_SCALE_SIZES=0,50000 BENCH_STORM=10000,60 bash bench/run`"),
            "{md}"
        );
        assert!(md.contains("about 189 Backups started per second"), "{md}");
        assert!(
            md.contains(
                "| klutch-health `/readyz` | 150000 | 0.210 | 1.234 | 9.000 | 100.00 | 0 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| klutch-health metric | 2000 | 1.5 | 6.0 | 12.0 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("average CPU ≤ 0.25 core — **missed** (0.310); RSS ≤ 64 MiB — **met** (peak 60.0 MiB); every probe answered — **met** (100.00 %)"),
            "{md}"
        );
        assert!(
            md.contains("same run — **met** (1.234 ms against 1.500 ms)"),
            "{md}"
        );
        assert!(
            md.contains("above the bare watch's — **met** (6.0 ms against 4.0 ms)"),
            "{md}"
        );
        let mut other = r.clone();
        other.sizes = [0, 1000, 10_000, 50_000].map(|n| size(n, 2, 20)).to_vec();
        other.churn.as_mut().unwrap().rate = 50;
        assert_eq!(
            storm_command(&other, other.storm.as_ref().unwrap()),
            "BENCH_ONLY=scale BENCH_CHURN=50,20 BENCH_STORM=10000,60 bash bench/run"
        );
        // A results.json from before the storm still renders (no storm section).
        let mut old: serde_json::Value = serde_json::to_value(&r).unwrap();
        old.as_object_mut().unwrap().remove("storm");
        let old: Results = serde_json::from_value(old).unwrap();
        assert!(!markdown(&old).contains("backup storm"));
        assert!(
            md.contains("Load average 0.50 0.40 0.30 before the run"),
            "{md}"
        );
        assert!(
            md.contains(
                "`/readyz` 2.1 s after its restart; one resource broken right then showed in klutch-health's verdict 0.42 s after its write (4 watch restarts counted; every object counted again and `/readyz` 200 afterwards: yes)"
            ),
            "{md}"
        );
    }
}
