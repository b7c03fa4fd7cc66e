//! klutch-health: one trustworthy health URL for a Klutch control plane.
//!
//! The [`config`] names the checks; each check type is one module of [`checks`], listed in
//! [`checks::TYPES`]. Checks watch provider-anynines, its ProviderConfigs, Crossplane packages, pods,
//! Deployments and ClusterBindings through [`kubernetes`] (one connection per cluster, shared watches), or
//! poll provider-anynines' health server, and publish observations into the [`signals`] sink; the [`engine`]
//! evaluates the [`policy`] whenever one changes and publishes a [`report`]; the [`server`] answers every
//! probe from that report through the [`render`]ers and exports [`metrics`]. Operators' `[[silence]]` and
//! `[maintenance]` are applied by [`operating`]; [`reload`] applies a changed configuration live; [`causes`] says which bad item explains which. [`app`]
//! wires them for `serve` and `check`; [`telemetry`] sets up logging; [`human`] words durations and errors;
//! [`values`] reads the value formats of configuration keys; [`reserved`] lists the item names the service
//! makes up. README.md's "How it works" tours the folders in the order an observation travels.

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
pub mod listen;
pub mod metrics;
pub mod operating;
pub mod policy;
pub mod reload;
pub mod render;
pub mod report;
pub mod reserved;
pub mod server;
pub mod signals;
pub mod telemetry;
pub mod values;
