//! klutch-health: one trustworthy health URL for a Klutch control plane.
//!
//! Checks ([`checks`]) watch the control plane through [`kubernetes`] or poll provider-anynines, and
//! publish observations into the [`signals`] sink; the [`engine`] evaluates the [`policy`] into a
//! [`report`], which the [`server`] answers every request from. The one-way path of an observation, folder
//! by folder, and the layers that keep it one-way: docs/developers/architecture.md.

pub mod app;
pub mod causes;
pub mod checks;
pub mod clock;
pub mod config;
pub mod connections;
pub mod engine;
pub mod events;
pub mod history;
pub mod human;
pub mod kubernetes;
pub mod lease;
pub mod links;
pub mod listen;
pub mod metrics;
pub mod operating;
pub mod policy;
pub mod reload;
pub mod render;
pub mod report;
pub mod reserved;
pub mod routes;
pub mod server;
pub mod signals;
pub mod telemetry;
pub mod values;
