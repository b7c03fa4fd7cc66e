//! The fast tier: every in-process and simulator-backed test. Plain `cargo test` runs it (with the unit
//! tests) in well under a minute after the build: no external program but the project's own binaries, no
//! root, no network. Tests that need more live in `tests/full` (docs/developers/testing.md).

#[path = "../common/mod.rs"]
mod common;

mod architecture;
mod backend_body;
mod backend_passthrough;
mod backend_status;
mod causes;
mod config;
mod docs;
mod estate;
mod events;
mod evidence;
mod fault_drills;
mod fuzz;
mod http_api;
mod kubernetes;
mod listeners;
mod log_forging;
mod logs;
mod managed_resources;
mod metrics;
mod operating;
mod policy;
mod reload;
mod second_signal;
mod shutdown;
