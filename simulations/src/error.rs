//! Why a run failed: a safety property broke, liveness was not reached in
//! time, the driver met a storage error it cannot explain, or two runs of one
//! seed differed.

/// A failed run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A safety property broke (the message says which and where): a bug in
    /// the engine or store, or in the simulator's model.
    #[error("safety: {0}")]
    Safety(String),
    /// After healing, members did not converge within the bound.
    #[error("liveness: {0}")]
    Liveness(String),
    /// A store call failed without a simulated crash behind it.
    #[error("storage: {0}")]
    Storage(String),
    /// Two runs of one seed produced different traces.
    #[error("determinism: trace {first} then {second}")]
    Determinism {
        /// The first run's trace hash.
        first: String,
        /// The second run's trace hash.
        second: String,
    },
}
