//! Caps on everything a bundle can contain. A decoded bundle that exceeds any
//! of them fails verification, whoever sent it. The sync engine's own caps
//! (frames, batches, in-flight) live in `sync::limits`.

/// Largest encoded bundle (body + signature).
pub const MAX_BUNDLE_BYTES: usize = 8 * 1024 * 1024;
/// Most ops in one bundle. A job above [`ADVISORY_OPS`] gets a warning; above this it is refused.
pub const MAX_OPS_PER_BUNDLE: usize = 100_000;
/// Op count above which a bundle gets an advisory warning (design notes §1).
pub const ADVISORY_OPS: usize = 1_000;
/// Most `pred` entries in one op (a resolution names every head of a field).
pub const MAX_PRED: usize = 256;
/// Longest text value.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;
/// Longest inline bytes value; larger data belongs in a blob.
pub const MAX_INLINE_BYTES: usize = 64 * 1024;
/// Longest entity type, field, asset name or media type.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest bundle summary or delete reason.
pub const MAX_SUMMARY_BYTES: usize = 1024;
