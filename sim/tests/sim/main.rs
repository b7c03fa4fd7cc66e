//! klutch-sim's own tests, one binary: the fake API's protocol, faults and writes, the fake backend, the
//! estate, the CRDs every object validates against, and the `klutch-sim` binary. Its tests with real
//! `kubectl` are in klutch-health's full tier (`tests/full/sim_kubectl.rs`, `tests/full/sim_tls.rs`).

mod common;

mod backend;
mod bin;
mod crds;
mod estate;
mod faults;
mod protocol;
mod writes;
