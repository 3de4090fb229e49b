//! The Troupe node library: the IO shells around the protocol engine and store.
//!
//! Not built yet: networking, daemon and CLI arrive with the node work.
