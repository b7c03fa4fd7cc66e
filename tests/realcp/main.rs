//! klutch-health against a real kube-apiserver and etcd, built from Kubernetes' own Go modules
//! (`controlplane/build.sh`; `cargo test --features full --test realcp`). The simulator still plays the world
//! (its objects are mirrored into the real server, its fake provider-anynines stays the backend); the real
//! server brings what the simulator cannot prove: the RBAC authorizer, validation of every write, server-side
//! apply, watch resumption, and what it does when etcd or the server itself goes away.

#[path = "../common/mod.rs"]
mod common;
// The committed Grafana dashboard's panels and queries, as the full tier reads them.
#[allow(dead_code)]
#[path = "../full/service_level/dashboard.rs"]
mod dashboard;
mod estate;
// Real programs (Prometheus, promtool) as the full tier runs them.
#[allow(dead_code)]
#[path = "../full/consumers/programs.rs"]
mod programs;

mod controllers;
mod events;
mod faults;
mod helm;
mod operation;
mod operator;
mod parity;
mod rbac;
mod sidecar;
mod watching;
