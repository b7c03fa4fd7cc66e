//! One klutch-health against the simulated control plane, and the faults every consumer is put through.
//! Each fault is injected, the consumer watched until it reports failure, then the fault healed and the
//! consumer watched until it reports success again. Every change the consumer shows is printed as
//! `DETECTION consumer=C fault=F event=E at_ms=N sees="..."` (measured, never asserted: DETECTION.md).

use std::time::Instant;

use klutch_sim::{BackendMode, SimControlPlane};

use crate::common::{full_config, kubeconfig, Service};
use crate::programs::HANG_GUARD;

/// klutch-health's settings that govern detection, besides full_config's backend-status
/// `interval = "100ms"`, `timeout = "500ms"` and the shipped readyz policy (`fail_after = "0s"`, unknown fails).
const STALE_AFTER: &str = "2s";
const SHUTDOWN_DELAY: &str = "2s";

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
        let dir = tempfile::tempdir().expect("temp dir");
        let kc = kubeconfig(&cp.api, dir.path());
        let svc = Service::start(
            &full_config(&cp.backend.url(), ""),
            &[
                ("KUBECONFIG", &kc),
                ("KLUTCH_HEALTH_KUBERNETES__STALE_AFTER", STALE_AFTER),
                ("KLUTCH_HEALTH_SERVER__SHUTDOWN_DELAY", SHUTDOWN_DELAY),
            ],
        )
        .await;
        svc.wait_for("/readyz", "the first sync", |r| r.status == 200)
            .await;
        Rig { cp, svc, _dir: dir }
    }

    /// klutch-health's side of the settings, for the printed measurements.
    pub fn settings() -> String {
        format!(
            "backend interval=100ms timeout=500ms; stale_after={STALE_AFTER}; \
             shutdown_delay={SHUTDOWN_DELAY}; readyz fail_after=0s unknown=fail"
        )
    }
}

/// What a consumer shows at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The consumer reports klutch-health (or the control plane) as failing.
    pub failing: bool,
    /// Its own words: a status code and body line, a server state, a metric, alerts.
    pub sees: String,
}

/// The faults, in the order they are drilled; klutch-health shutting down comes last as it ends the process.
#[derive(Debug, Clone, Copy)]
enum Fault {
    ProviderConfigDegraded,
    ProviderUnhealthy,
    BackendHang,
    ApiDown,
    Shutdown,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::ProviderConfigDegraded,
        Fault::ProviderUnhealthy,
        Fault::BackendHang,
        Fault::ApiDown,
        Fault::Shutdown,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::ProviderConfigDegraded => "providerconfig-degraded",
            Fault::ProviderUnhealthy => "provider-unhealthy",
            Fault::BackendHang => "backend-hang",
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
            Fault::BackendHang => cp.backend.set_mode(BackendMode::Hang),
            Fault::ApiDown => cp.api.set_down(true),
            Fault::Shutdown => {
                let status = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(rig.svc.pid().to_string())
                    .status()
                    .expect("kill");
                assert!(status.success(), "kill -TERM klutch-health");
            }
        }
    }

    fn heal(self, rig: &Rig) {
        let cp = &rig.cp;
        match self {
            Fault::ProviderConfigDegraded => cp.heal_provider_config("postgresql-backup-manager"),
            Fault::ProviderUnhealthy => cp.set_provider_healthy("provider-anynines", true),
            Fault::BackendHang => cp.backend.set_mode(BackendMode::Healthy),
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
    done: impl Fn(&View) -> bool,
) -> View {
    loop {
        let view = observe().await;
        let ms = since.elapsed().as_millis();
        if done(&view) {
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
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn print_detection(consumer: &str, fault: Fault, event: &str, ms: u128, view: &View) {
    eprintln!(
        "DETECTION consumer={consumer} fault={} event={event} at_ms={ms} failing={} sees={:?}",
        fault.name(),
        view.failing,
        view.sees
    );
}

/// Puts `consumer` through every fault. `observe` reads the consumer's current view; `consumer_settings`
/// are printed with klutch-health's so that each measurement says what governed it.
pub async fn drill(
    consumer: &str,
    consumer_settings: &str,
    mut rig: Rig,
    mut observe: impl AsyncFnMut() -> View,
) {
    eprintln!(
        "DETECTION-SETTINGS consumer={consumer} klutch-health=\"{}\" consumer=\"{consumer_settings}\"",
        Rig::settings()
    );
    let mut last = None;
    for fault in Fault::ALL {
        let healthy = watch(
            consumer,
            fault,
            "healthy-before",
            Instant::now(),
            last,
            &mut observe,
            |v| !v.failing,
        )
        .await;
        let injected = Instant::now();
        fault.inject(&rig);
        let failing = watch(
            consumer,
            fault,
            "failing",
            injected,
            Some(healthy.clone()),
            &mut observe,
            |v| v.failing,
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
                |v| v.failing && (gone_already || v.sees != failing.sees),
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
                |v| !v.failing,
            )
            .await,
        );
    }
}
