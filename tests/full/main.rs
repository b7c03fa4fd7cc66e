//! The full tier: tests that need programs from outside (Chromium, HAProxy, Prometheus and promtool, nginx,
//! blackbox_exporter, kubectl), root, or minutes. Built only with the `full` feature
//! (`cargo test --workspace --features klutch-health/full`, which `.ci/run` runs); a missing program fails
//! its test, never skips it.

#[path = "../common/mod.rs"]
mod common;
mod kubelet;
mod kustomize;

mod chart;
mod consumers;
mod container;
mod deploy;
mod deploy_routes;
mod events;
mod history;
mod image;
mod metrics;
mod reload;
mod scale;
mod service_level;
mod status_page;
