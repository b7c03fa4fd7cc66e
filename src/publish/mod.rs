//! What the service tells the cluster itself: Kubernetes Events for the report's transitions, sent by the
//! one replica that holds the Lease.

pub mod events;
pub mod lease;
