//! Deterministic simulation of many Troupe nodes.
//!
//! Not built yet: this crate is filled by the simulation work. It exposes nothing.
