//! Harness for multi-node tests. Filled when the node exists.
