//! Kubernetes: one connection per cluster that proves its API server alive, shared watches with their
//! backoff and bounds, and the words for API errors. Check types read clusters through `watch` only.

mod answers;
pub(crate) mod api_errors;
pub(crate) mod connection;
pub(crate) mod lists;
pub mod settings;
pub(crate) mod watch;
