//! klutch-sim's own tests, one binary: the fake API's protocol, faults and writes, the fake backend, the
//! estate, the CRDs every object validates against, and the `klutch-sim` binary. Its tests with real
//! `kubectl` (plain and over TLS) need the feature `full`, which klutch-health's `full` (the full tier,
//! `cargo test --workspace --features klutch-health/full`, as `.ci/run` runs it) enables; a missing kubectl
//! fails them, never skips them.

mod common;

mod backend;
mod bin;
mod crds;
mod estate;
mod faults;
#[cfg(feature = "full")]
mod kubectl;
mod protocol;
#[cfg(feature = "full")]
mod tls;
mod writes;
