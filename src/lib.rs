//! klutch-health: one trustworthy health URL for a Klutch control plane.
//!
//! Checks ([`checks`]) watch the control plane through [`kubernetes`] or poll provider-anynines, and
//! publish observations into the [`signals`] sink; the [`engine`] evaluates the [`verdict`] (policy into
//! report), which [`http`] answers every request from and [`publish`] turns into Kubernetes Events. The
//! one-way path of an observation, folder by folder, and the layers that keep it one-way:
//! docs/developers/architecture.md.

pub mod app;
pub mod checks;
pub mod clock;
pub mod config;
pub mod engine;
pub mod http;
pub mod human;
pub mod kubernetes;
pub mod metrics;
pub mod publish;
pub mod render;
pub mod reserved;
pub mod signals;
pub mod telemetry;
pub mod values;
pub mod verdict;
