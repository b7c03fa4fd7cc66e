//! Verdict parity: each scenario the simulator-backed tests drive, played once, judged by two klutch-health
//! processes with the shipped configuration — one reading the simulator's fake API server, one reading the
//! real kube-apiserver the simulator's objects are mirrored into. Their `/readyz?verbose` must say the same,
//! line for line (times aside). The table in docs/developers/real-control-plane.md ("Parity with the
//! simulator") lists the scenarios.

use std::time::{Duration, Instant};

use klutch_realcp::KLUTCH_HEALTH;
use klutch_sim::control_plane::PROVIDER_CONFIG_API;
use klutch_sim::{PodState, SimControlPlane};

use crate::common::Service;
use crate::estate::{wait_for, Estate, DEADLINE, HEARTBEAT};
use crate::rbac::all_ok;

const POD: &str = "provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q";

/// A body with its times (`2026-11-25T16:02:11Z`, `2026-11-25T16:02:11.123456Z`, `16:02:11Z`) as `<time>`:
/// the two sides see the same change a few milliseconds apart.
fn normalized(body: &str) -> String {
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let clock = |at: usize| {
            at + 8 <= chars.len()
                && chars[at..at + 8].iter().enumerate().all(|(k, c)| {
                    if k == 2 || k == 5 {
                        *c == ':'
                    } else {
                        c.is_ascii_digit()
                    }
                })
        };
        let date = i + 11 <= chars.len()
            && chars[i..i + 10].iter().enumerate().all(|(k, c)| {
                if k == 4 || k == 7 {
                    *c == '-'
                } else {
                    c.is_ascii_digit()
                }
            })
            && chars[i + 10] == 'T'
            && clock(i + 11);
        let start = if date {
            Some(i + 19)
        } else if clock(i) {
            Some(i + 8)
        } else {
            None
        };
        if let Some(mut end) = start {
            if end < chars.len() && chars[end] == '.' {
                end += 1;
                while end < chars.len() && chars[end].is_ascii_digit() {
                    end += 1;
                }
            }
            if end < chars.len() && chars[end] == 'Z' {
                out.push_str("<time>");
                i = end + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Plays `scenario` on the simulator (mirrored into the real server) and waits until both klutch-health
/// processes show `shows` and say the same; the agreed body.
async fn parity(scenario: impl FnOnce(&SimControlPlane), shows: impl Fn(&str) -> bool) -> String {
    let mut estate = Estate::shared().await;
    let sim = estate.klutch_health_on_sim("klutch-health-sim").await;
    let real = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-real", None, |_| {})
        .await;
    for svc in [&sim, &real] {
        wait_for(svc, "/readyz?verbose", "synced", |r| all_ok(&r.body)).await;
    }
    scenario(&estate.sim);
    estate.mirror.caught_up().await.expect("mirrored");
    agree(&sim, &real, shows).await
}

async fn agree(sim: &Service, real: &Service, shows: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let (s, r) = (
            sim.get("/readyz?verbose").await,
            real.get("/readyz?verbose").await,
        );
        let same = s.status == r.status && normalized(&s.body) == normalized(&r.body);
        if shows(&s.body) && shows(&r.body) && same {
            return normalized(&r.body);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the simulator and the real API server disagree:\n--- simulator ({}):\n{}\n--- real ({}):\n{}",
            s.status,
            s.body,
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_degraded_provider_config() {
    parity(
        |sim| {
            sim.degrade_provider_config("postgresql-backup-manager", "backup manager unreachable")
        },
        |b| {
            b.contains("[-]provider-configs/postgresql-backup-manager failed")
                && b.contains("[-]backend-status/postgresql-backup-manager failed")
        },
    )
    .await;
}

#[tokio::test]
async fn an_unhealthy_provider() {
    parity(
        |sim| sim.set_provider_healthy("provider-anynines", false),
        |b| b.contains("[-]providers/provider-anynines failed: Healthy is \"False\""),
    )
    .await;
}

#[tokio::test]
async fn an_unavailable_deployment() {
    parity(
        |sim| sim.set_deployment_available("bind", "anynines-backend", false),
        |b| b.contains("[-]anynines-backend/anynines-backend failed"),
    )
    .await;
}

/// A rollout in progress passes; both say so in JSON.
#[tokio::test]
async fn a_lagging_deployment() {
    let mut estate = Estate::shared().await;
    let sim = estate.klutch_health_on_sim("klutch-health-sim").await;
    let real = estate
        .klutch_health(KLUTCH_HEALTH, "klutch-health-real", None, |_| {})
        .await;
    for svc in [&sim, &real] {
        wait_for(svc, "/readyz?verbose", "synced", |r| all_ok(&r.body)).await;
    }
    estate
        .sim
        .set_deployment_lagging("bind", "anynines-backend");
    estate.mirror.caught_up().await.expect("mirrored");
    for svc in [&sim, &real] {
        wait_for(svc, "/readyz?format=json", "the rollout said", |r| {
            r.json()["checks"]["anynines-backend"][0]["output"]
                .as_str()
                .is_some_and(|o| {
                    o.starts_with(
                        "rolling out: Waiting for deployment \"anynines-backend\" spec update to be \
                         observed (observed generation ",
                    )
                })
        })
        .await;
    }
    agree(&sim, &real, |b| {
        b.contains("[+]anynines-backend/anynines-backend ok\n")
    })
    .await;
}

#[tokio::test]
async fn a_pod_in_crash_loop_back_off() {
    parity(
        |sim| {
            sim.api.update(
                "v1",
                "Pod",
                Some("crossplane-system"),
                POD,
                klutch_sim::pods::crash_loop,
            );
        },
        |b| b.contains("CrashLoopBackOff (7 restarts)"),
    )
    .await;
}

#[tokio::test]
async fn an_evicted_and_a_terminating_pod() {
    let body = parity(
        |sim| {
            sim.add_provider_pod(PodState::Evicted);
            sim.add_provider_pod(PodState::Terminating);
        },
        |b| b.contains("-terminating warn: terminating (deletion requested at "),
    )
    .await;
    assert!(!body.contains("-evicted"), "{body}");
}

#[tokio::test]
async fn a_silent_konnector() {
    parity(
        |sim| {
            sim.silence_konnector("kube-bind-7xk2p", true);
        },
        |b| b.contains("[+]konnectors/kube-bind-7xk2p warn: konnector of app cluster kube-bind-7xk2p silent since"),
    )
    .await;
}

#[tokio::test]
async fn a_cluster_binding_added() {
    parity(
        |sim| sim.add_cluster_binding("kube-bind-n3w4p", HEARTBEAT),
        |b| b.contains("[+]konnectors/kube-bind-n3w4p ok"),
    )
    .await;
}

#[tokio::test]
async fn an_unchecked_provider_config() {
    parity(
        |sim| {
            sim.api.update(
                PROVIDER_CONFIG_API,
                "ProviderConfig",
                None,
                "postgresql-service-broker",
                |pc| {
                    if let Some(health) = pc["status"]["health"].as_object_mut() {
                        health.remove("lastCheckTime");
                    }
                },
            );
        },
        |b| b.contains("[-]provider-configs/postgresql-service-broker failed"),
    )
    .await;
}

/// Crossplane 2 scales provider-anynines to zero: it passes saying so, and so does its pods check with no
/// pod (its `package`).
#[tokio::test]
async fn a_provider_scaled_to_zero() {
    parity(
        |sim| {
            sim.set_provider_scaled_to_zero("provider-anynines", true);
        },
        |b| {
            b.contains("[+]provider-pods/_none ok")
                && b.contains("[+]providers/provider-anynines ok")
        },
    )
    .await;
}

/// klutch-bind's control-plane mode: the konnector Deployment of one AppClusterBinding gone, another
/// binding's kubeconfig Secret invalid.
#[tokio::test]
async fn a_missing_app_konnector_and_an_invalid_binding_secret() {
    parity(
        |sim| {
            sim.remove_app_konnector("team-a", "prod");
            sim.set_app_cluster_binding(
                "team-b",
                "dev",
                klutch_sim::estate::BindingState::SecretInvalid,
            );
        },
        |b| {
            b.contains(
                "[+]app-cluster-bindings/team-a.prod warn: konnector Deployment klutch-bind-team-a-prod/konnector-prod not found",
            ) && b.contains("[+]app-cluster-bindings/team-b.dev warn: SecretValid is \"False\"")
        },
    )
    .await;
}

#[tokio::test]
async fn an_unavailable_app_konnector() {
    parity(
        |sim| sim.set_deployment_available("klutch-bind-team-a-prod", "konnector-prod", false),
        |b| {
            b.contains(
                "[+]app-cluster-bindings/team-a.prod warn: konnector klutch-bind-team-a-prod/konnector-prod: Available is \"False\"",
            )
        },
    )
    .await;
}

/// One tenant's ServiceInstance failing (its Synced=False words) warns; the kind is counted by state.
#[tokio::test]
async fn a_failing_service_instance() {
    parity(
        |sim| {
            sim.set_managed(
                klutch_sim::ManagedKind::ServiceInstance,
                "pg-prod-7",
                klutch_sim::ManagedState::Failing,
            );
        },
        |b| {
            b.contains(
                "[+]managed-resources/serviceinstances warn: 0 of 1 ready, 1 failing: pg-prod-7 (Synced=False, ReconcileError: ",
            )
        },
    )
    .await;
}

/// A broker's systemic fault: every Backup of one ProviderConfig failing (past `fail_min` and `fail_share`)
/// fails the kind, naming the ProviderConfig.
#[tokio::test]
async fn a_broker_failing_all_its_backups() {
    parity(
        |sim| {
            sim.add_many_managed(
                klutch_sim::ManagedKind::Backup,
                4,
                klutch_sim::ManagedState::Failing,
                Some("redis-backup-manager"),
            );
        },
        |b| {
            b.contains("[-]managed-resources/backups failed: 1 of 5 ready, 4 failing: ")
                && b.contains("fail: redis-backup-manager (4 of 4 failing)")
        },
    )
    .await;
}

#[test]
fn times_are_normalized_in_every_form() {
    assert_eq!(
        normalized(
            "since 2026-11-25T16:02:11Z, at 2026-11-25T16:02:11.123456Z, since 16:02:11Z; 10:30 ok"
        ),
        "since <time>, at <time>, since <time>; 10:30 ok"
    );
}
