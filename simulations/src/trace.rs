//! The run's trace: a rolling blake3 over every event the simulation
//! processes. Two runs of one seed must end with the same hash; a difference
//! means something outside the seed (a clock, a hash map's order, a thread)
//! leaked into the run.

/// A rolling hash of the events of one run.
#[derive(Debug, Clone)]
pub struct Trace {
    hasher: blake3::Hasher,
    events: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hasher: blake3::Hasher::new(),
            events: 0,
        }
    }
}

impl Trace {
    /// Adds one event: its time, a short kind tag, the node and a payload.
    pub fn record(&mut self, now: u64, kind: &str, node: usize, payload: &[u8]) {
        self.hasher.update(&now.to_le_bytes());
        self.hasher.update(kind.as_bytes());
        self.hasher.update(&(node as u64).to_le_bytes());
        self.hasher.update(blake3::hash(payload).as_bytes());
        self.events += 1;
    }

    /// Events recorded so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The hash so far, as hex.
    pub fn hash(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}
