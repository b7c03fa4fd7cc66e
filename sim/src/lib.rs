//! A simulated Klutch control plane for tests and the demo: a fake Kubernetes API server speaking the real
//! list/watch protocol ([`FakeApi`]), a fake provider-anynines health server ([`FakeBackend`]), and both seeded
//! as a healthy Klutch control plane ([`SimControlPlane`]). Every fake can be driven into faults.

pub mod api;
pub mod backend;
pub mod control_api;
pub mod control_plane;
pub mod estate;
pub mod fixtures;
mod kubectl;
pub mod managed;
mod net;
pub mod pods;
mod selector;

pub use api::{ApplyError, FakeApi, Readiness, RecordedRequest, WatchFault};
pub use backend::{BackendMode, FakeBackend, OddEntries};
pub use control_plane::SimControlPlane;
pub use estate::{PackageHealth, PackageKind};
pub use kubectl::kubectl;
pub use managed::{ManagedKind, ManagedState};
pub use pods::PodState;
