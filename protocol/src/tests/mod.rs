//! Property and scenario tests of the protocol core (beside the code, with
//! access to the crate's internals and test helpers).

mod convergence;
mod encoding;
mod undo;
mod verify_errors;
