//! Checkers, kept apart from the driver so what is asserted is easy to read:
//! [`safety`] holds at every step of every run, [`liveness`] once faults stop.

pub mod liveness;
pub mod safety;

/// One bundle slot: (workspace, author, seq).
pub type Slot = (troupe_protocol::WorkspaceId, troupe_protocol::ActorId, u64);
