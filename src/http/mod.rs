//! Serving: every route, the listeners (their addresses and the admission of their connections) and the
//! server that answers each request from the latest report.

pub mod admission;
pub mod listen;
pub mod routes;
pub mod server;
