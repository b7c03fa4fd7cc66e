//! klutch-health: one trustworthy health URL for a Klutch control plane.
//!
//! Signals ([`signals`]) watch provider-anynines, its ProviderConfigs, Crossplane Providers and the
//! klutch-bind Deployments and publish observations; the [`engine`] evaluates the [`policy`] whenever one
//! changes and publishes a [`report`]; the [`server`] answers every probe from that report through the
//! [`render`]ers. See `README.md` for the HTTP API and `config.toml` for every setting.

pub mod app;
pub mod config;
pub mod engine;
pub mod human;
pub mod metrics;
pub mod policy;
pub mod render;
pub mod report;
pub mod server;
pub mod signals;
pub mod telemetry;
pub mod values;
