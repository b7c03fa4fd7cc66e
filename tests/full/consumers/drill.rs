//! One klutch-health against the simulated control plane, and the faults every consumer is put through.
//! Each fault is injected, the consumer watched until it shows it, then the fault healed and the consumer
//! watched until it passes again. A fault that fails `/readyz` must make the consumer report failure; a
//! silent konnector (warn_only in the shipped config) must not: a consumer that reads warnings shows one,
//! the others keep passing. Every change the consumer shows is printed as
//! `DETECTION consumer=C fault=F event=E at_ms=N shows=S sees="..."` (measured, never asserted: docs/operators/detection.md).

use std::time::{Duration, Instant};

use klutch_sim::{BackendMode, SimControlPlane};

use super::programs::HANG_GUARD;
use crate::common::{full_config, kubeconfig, Service};

/// klutch-health's settings that govern detection, besides full_config's backend-status
/// `interval = "100ms"`, `timeout = "500ms"` and the shipped readyz policy (`fail_after = "0s"`, unknown fails).
const STALE_AFTER: &str = "2s";
const PROBE_INTERVAL: &str = "500ms";
const PROBE_TIMEOUT: &str = "500ms";
const SHUTDOWN_DELAY: &str = "2s";
/// The simulated konnectors' `heartbeatInterval`: one is silent after twice that.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// The app cluster whose konnector falls silent.
const SILENT_APP: &str = "kube-bind-7xk2p";
/// A consumer that cannot show a warning must have asked `/readyz` this often while klutch-health reported
/// the silent konnector, and passed: more than any consumer's `fall`.
const ASKS_WHILE_WARNING: u64 = 3;

/// klutch-health, the fakes it watches, and the directory of its kubeconfig.
pub struct Rig {
    pub cp: SimControlPlane,
    pub svc: Service,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Starts the simulated control plane and klutch-health, and waits until `/readyz` passes.
    pub async fn start() -> Rig {
        let cp = SimControlPlane::start()
            .await
            .expect("simulated control plane");
        cp.seed_estate(HEARTBEAT_INTERVAL);
        let dir = tempfile::tempdir().expect("temp dir");
        let kc = kubeconfig(&cp.api, dir.path());
        let svc = Service::start(
            &full_config(&cp.backend.url(), ""),
            &[
                ("KUBECONFIG", &kc),
                ("KLUTCH_HEALTH_KUBERNETES__STALE_AFTER", STALE_AFTER),
                ("KLUTCH_HEALTH_KUBERNETES__PROBE_INTERVAL", PROBE_INTERVAL),
                ("KLUTCH_HEALTH_KUBERNETES__PROBE_TIMEOUT", PROBE_TIMEOUT),
                ("KLUTCH_HEALTH_SERVER__SHUTDOWN_DELAY", SHUTDOWN_DELAY),
            ],
        )
        .await;
        // Every konnector has heartbeated: nothing warns before the drill starts.
        svc.wait_for("/readyz?verbose", "the first sync", |r| {
            r.status == 200 && !r.body.contains(" warn:")
        })
        .await;
        Rig { cp, svc, _dir: dir }
    }

    /// klutch-health's side of the settings, for the printed measurements.
    pub fn settings() -> String {
        format!(
            "backend interval=100ms timeout=500ms; stale_after={STALE_AFTER}; \
             probe_interval={PROBE_INTERVAL} probe_timeout={PROBE_TIMEOUT}; \
             heartbeatInterval={HEARTBEAT_INTERVAL:?}; shutdown_delay={SHUTDOWN_DELAY}; \
             readyz fail_after=0s unknown=fail warn_only=konnectors"
        )
    }

    /// klutch-health's own line for the silent konnector, as the main listener shows it.
    async fn konnector_line(&self) -> (u16, String) {
        let r = self.svc.get("/readyz/konnectors?verbose").await;
        let item = format!("[+]konnectors/{SILENT_APP} ");
        let line = r.body.lines().find(|l| l.starts_with(&item));
        (r.status, line.unwrap_or_default().to_string())
    }

    /// How many `/readyz` requests klutch-health has answered 200 and 503 (`/readyz/NAME` not included).
    async fn readyz_answers(&self) -> (u64, u64) {
        let metrics = self.svc.get("/metrics").await.body;
        let count = |code: &str| {
            metrics
                .lines()
                .filter(|l| l.starts_with("klutch_health_http_requests_total{"))
                .filter(|l| {
                    l.contains("path=\"/readyz\"") && l.contains(&format!("code=\"{code}\""))
                })
                .find_map(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        (count("200"), count("503"))
    }
}

/// What a consumer shows at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub shows: Shows,
    /// Its own words: a status code and body line, a server state, a metric, alerts.
    pub sees: String,
}

/// The consumer's verdict on klutch-health (or the control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shows {
    Pass,
    /// Passing, with a warning a person can read (a `[+]… warn:` line, a non-paging alert firing).
    Warn,
    /// Failing: it drains, pages, or reports the control plane down.
    Fail,
}

/// Whether a consumer can show [`Shows::Warn`] at all, or only pass and fail (a load balancer, a probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warnings {
    Shown,
    Invisible,
}

/// The faults, in the order they are drilled; klutch-health shutting down comes last as it ends the process.
#[derive(Debug, Clone, Copy)]
enum Fault {
    ProviderConfigDegraded,
    ProviderUnhealthy,
    /// provider-anynines' container crash-loops: its pod, the Provider, the refused health server and its
    /// entries fail together, with one root cause.
    ProviderCrashLoop,
    BackendHang,
    KonnectorSilent,
    ApiFrozen,
    ApiDown,
    Shutdown,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::ProviderConfigDegraded,
        Fault::ProviderUnhealthy,
        Fault::ProviderCrashLoop,
        Fault::BackendHang,
        Fault::KonnectorSilent,
        Fault::ApiFrozen,
        Fault::ApiDown,
        Fault::Shutdown,
    ];

    /// Faults that fail `/readyz` (every one but the konnector of warn_only).
    fn fails_readyz(self) -> bool {
        !matches!(self, Fault::KonnectorSilent)
    }

    fn name(self) -> &'static str {
        match self {
            Fault::ProviderConfigDegraded => "providerconfig-degraded",
            Fault::ProviderUnhealthy => "provider-unhealthy",
            Fault::ProviderCrashLoop => "provider-crash-loop",
            Fault::BackendHang => "backend-hang",
            Fault::KonnectorSilent => "konnector-silent",
            Fault::ApiFrozen => "api-black-holed",
            Fault::ApiDown => "api-down",
            Fault::Shutdown => "sigterm",
        }
    }

    fn inject(self, rig: &Rig) {
        let cp = &rig.cp;
        match self {
            Fault::ProviderConfigDegraded => cp.degrade_provider_config(
                "postgresql-backup-manager",
                "Get \"http://example-backup-manager.example.svc:3000\": connection refused",
            ),
            Fault::ProviderUnhealthy => cp.set_provider_healthy("provider-anynines", false),
            Fault::ProviderCrashLoop => cp.crash_loop_provider(true),
            Fault::BackendHang => cp.backend.set_mode(BackendMode::Hang),
            Fault::KonnectorSilent => assert!(cp.silence_konnector(SILENT_APP, true)),
            Fault::ApiFrozen => cp.api.set_frozen(true),
            Fault::ApiDown => cp.api.set_down(true),
            Fault::Shutdown => {
                crate::common::signal("TERM", rig.svc.pid());
            }
        }
    }

    fn heal(self, rig: &Rig) {
        let cp = &rig.cp;
        match self {
            Fault::ProviderConfigDegraded => cp.heal_provider_config("postgresql-backup-manager"),
            Fault::ProviderUnhealthy => cp.set_provider_healthy("provider-anynines", true),
            Fault::ProviderCrashLoop => cp.crash_loop_provider(false),
            Fault::BackendHang => cp.backend.set_mode(BackendMode::Healthy),
            Fault::KonnectorSilent => assert!(cp.silence_konnector(SILENT_APP, false)),
            Fault::ApiFrozen => cp.api.set_frozen(false),
            Fault::ApiDown => cp.api.set_down(false),
            Fault::Shutdown => unreachable!("a shut-down klutch-health is not healed"),
        }
    }
}

/// Watches `observe` until `done` accepts a view, printing it and every change from `last` with the time
/// since `since`; panics after [`HANG_GUARD`].
async fn watch(
    consumer: &str,
    fault: Fault,
    event: &str,
    since: Instant,
    mut last: Option<View>,
    observe: &mut impl AsyncFnMut() -> View,
    mut done: impl AsyncFnMut(&View) -> bool,
) -> View {
    loop {
        let view = observe().await;
        let ms = since.elapsed().as_millis();
        if done(&view).await {
            print_detection(consumer, fault, event, ms, &view);
            return view;
        }
        if last.as_ref() != Some(&view) {
            print_detection(consumer, fault, "changed", ms, &view);
            last = Some(view);
        }
        assert!(
            since.elapsed() < HANG_GUARD,
            "{consumer} did not reach `{event}` within {HANG_GUARD:?} of {}; last saw {last:?}",
            fault.name()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn print_detection(consumer: &str, fault: Fault, event: &str, ms: u128, view: &View) {
    eprintln!(
        "DETECTION consumer={consumer} fault={} event={event} at_ms={ms} shows={:?} sees={:?}",
        fault.name(),
        view.shows,
        view.sees
    );
}

/// Watches a consumer through the silent konnector: it never fails, and it shows the warning if it can
/// show warnings at all; otherwise it keeps passing while asking `/readyz` [`ASKS_WHILE_WARNING`] times
/// after klutch-health itself warns. Returns the view it ends on.
async fn watch_warning(
    consumer: &str,
    warnings: Warnings,
    rig: &Rig,
    since: Instant,
    last: View,
    observe: &mut impl AsyncFnMut() -> View,
) -> View {
    let fault = Fault::KonnectorSilent;
    let (_, failed_before) = rig.readyz_answers().await;
    // The count of passing `/readyz` answers when klutch-health was first seen warning.
    let mut warned_at: Option<u64> = None;
    let view = watch(
        consumer,
        fault,
        "warning",
        since,
        Some(last),
        observe,
        async |v: &View| {
            assert_ne!(
                v.shows,
                Shows::Fail,
                "{consumer} fails on a warn_only konnector: {v:?}"
            );
            if warned_at.is_none() {
                let (status, line) = rig.konnector_line().await;
                assert_eq!(status, 200, "the silent konnector fails /readyz: {line}");
                if line.contains(" warn: ") {
                    eprintln!(
                        "DETECTION consumer={consumer} fault={} event=klutch-health-warns at_ms={} sees={line:?}",
                        fault.name(),
                        since.elapsed().as_millis()
                    );
                    warned_at = Some(rig.readyz_answers().await.0);
                }
            }
            match (warnings, warned_at) {
                (Warnings::Shown, _) => v.shows == Shows::Warn,
                (Warnings::Invisible, Some(at)) => {
                    v.shows == Shows::Pass
                        && rig.readyz_answers().await.0 >= at + ASKS_WHILE_WARNING
                }
                (Warnings::Invisible, None) => false,
            }
        },
    )
    .await;
    if warnings == Warnings::Shown {
        let named = [
            format!("[+]konnectors/{SILENT_APP} warn: "),
            "KlutchKonnectorSilent:firing".into(),
        ];
        assert!(
            named.iter().any(|n| view.sees.contains(n.as_str())),
            "{consumer} warns of something else than the silent konnector: {view:?}"
        );
    }
    let (_, failed_after) = rig.readyz_answers().await;
    assert_eq!(
        failed_before, failed_after,
        "/readyz answered 503 while only a konnector was silent"
    );
    view
}

/// Puts `consumer` through every fault. `observe` reads the consumer's current view; `consumer_settings`
/// are printed with klutch-health's so that each measurement says what governed it.
pub async fn drill(
    consumer: &str,
    consumer_settings: &str,
    warnings: Warnings,
    mut rig: Rig,
    mut observe: impl AsyncFnMut() -> View,
) {
    eprintln!(
        "DETECTION-SETTINGS consumer={consumer} klutch-health=\"{}\" consumer=\"{consumer_settings}\"",
        Rig::settings()
    );
    let mut last = None;
    for fault in Fault::ALL {
        // A warning left by the fault before (a watch still relisting with backoff after the API server's
        // return) does not matter to a failure, but must be gone before a warning is looked for.
        let healthy = watch(
            consumer,
            fault,
            "healthy-before",
            Instant::now(),
            last,
            &mut observe,
            async |v: &View| match fault.fails_readyz() {
                true => v.shows != Shows::Fail,
                false => v.shows == Shows::Pass,
            },
        )
        .await;
        let injected = Instant::now();
        fault.inject(&rig);
        if !fault.fails_readyz() {
            let shown =
                watch_warning(consumer, warnings, &rig, injected, healthy, &mut observe).await;
            let healed = Instant::now();
            fault.heal(&rig);
            // Recovered once klutch-health itself says ok again, and the consumer passes.
            last = Some(
                watch(
                    consumer,
                    fault,
                    "recovered",
                    healed,
                    Some(shown),
                    &mut observe,
                    async |v: &View| {
                        v.shows == Shows::Pass && rig.konnector_line().await.1.ends_with(" ok")
                    },
                )
                .await,
            );
            continue;
        }
        let failing = watch(
            consumer,
            fault,
            "failing",
            injected,
            Some(healthy.clone()),
            &mut observe,
            async |v: &View| v.shows == Shows::Fail,
        )
        .await;
        assert_ne!(healthy.sees, failing.sees, "{consumer} shows the failure");
        if let Fault::Shutdown = fault {
            // Then the process exits after shutdown_delay and the consumer meets a closed port; a consumer
            // that only noticed once the port was closed has seen that already. Times count from SIGTERM.
            let addr = rig.svc.addr;
            let gone_already = tokio::net::TcpStream::connect(addr).await.is_err();
            assert_eq!(rig.svc.wait_exit().await, Some(0));
            if !gone_already {
                eprintln!(
                    "DETECTION consumer={consumer} fault=sigterm event=exited at_ms={}",
                    injected.elapsed().as_millis()
                );
            }
            watch(
                consumer,
                fault,
                "gone",
                injected,
                Some(failing.clone()),
                &mut observe,
                async |v: &View| v.shows == Shows::Fail && (gone_already || v.sees != failing.sees),
            )
            .await;
            return;
        }
        let healed = Instant::now();
        fault.heal(&rig);
        last = Some(
            watch(
                consumer,
                fault,
                "recovered",
                healed,
                Some(failing),
                &mut observe,
                async |v: &View| v.shows != Shows::Fail,
            )
            .await,
        );
    }
}
