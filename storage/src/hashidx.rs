//! The hash index: bundle hash → (workspace, author, seq).
//!
//! Hashes are random, so inserting a batch's hashes one by one into a large
//! B-tree dirties about one page per bundle at every commit. Instead each
//! commit appends ONE sealed row to `hash_log` with its entries sorted by
//! hash; once the log holds [`MERGE_ROWS`] rows they are merged, in hash
//! order, into `hash_index` (sealed rows), in the committing transaction.
//! Lookups check `hash_index`, then binary-search each log row.
//!
//! The index is a locator, not a proof: every bundle found through it is
//! verified against `seq_hash` and its own hash before it is returned, so a
//! stale entry (a withdrawn fork copy) can never serve a wrong bundle.

use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use troupe_protocol::{ActorId, BundleHash, WorkspaceId};

use crate::error::DamagedRow;
use crate::schema::*;

/// Log rows kept before they are merged into `hash_index`.
pub(crate) const MERGE_ROWS: u64 = 64;

const ENTRY: usize = 32 + 72;

type Rw<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// One index entry: a bundle hash and its slot key.
pub(crate) type Entry = ([u8; 32], [u8; 72]);

fn encode_log(key: &[u8], entries: &[Entry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entries.len() * ENTRY + 8);
    for (h, k) in entries {
        v.extend_from_slice(h);
        v.extend_from_slice(k);
    }
    seal(key, v)
}

/// The entries of a sealed log row (sorted by hash).
fn decode_log<'a>(key: &[u8], v: &'a [u8]) -> Result<&'a [u8], DamagedRow> {
    let body = unseal(key, v).ok_or(DamagedRow { what: "hash log" })?;
    if body.len() % ENTRY != 0 {
        return Err(DamagedRow { what: "hash log" });
    }
    Ok(body)
}

fn search_log(body: &[u8], hash: &[u8; 32]) -> Option<[u8; 72]> {
    let n = body.len() / ENTRY;
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let e = &body[mid * ENTRY..(mid + 1) * ENTRY];
        match e[..32].cmp(hash.as_slice()) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return e[32..].try_into().ok(),
        }
    }
    None
}

fn index_value(hash: &[u8], slot: &[u8]) -> Vec<u8> {
    seal(hash, slot.to_vec())
}

/// Records a commit's new hashes (one log row), merging the log into the
/// index when it is long enough.
pub(crate) fn append(txn: &WriteTransaction, mut entries: Vec<Entry>) -> Result<(), StoreErr> {
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort_unstable_by_key(|e| e.0);
    let mut log: Rw<'_> = txn.open_table(HASH_LOG)?;
    let next = match log.last()? {
        Some((k, _)) => read_id(k.value())?.saturating_add(1),
        None => 1,
    };
    let key = next.to_be_bytes();
    log.insert(key.as_slice(), encode_log(&key, &entries).as_slice())?;
    if log.len()? >= MERGE_ROWS {
        merge(txn, &mut log)?;
    }
    Ok(())
}

fn read_id(k: &[u8]) -> Result<u64, DamagedRow> {
    k.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| DamagedRow {
            what: "hash log key",
        })
}

/// Moves every log entry into `hash_index`, in hash order. A log row whose
/// seal fails is dropped (the index is only a locator; `seq_hash` keeps the
/// truth and scrub reports nothing lost by it).
fn merge(txn: &WriteTransaction, log: &mut Rw<'_>) -> Result<(), StoreErr> {
    let mut all: Vec<Entry> = Vec::new();
    for row in log.iter()? {
        let (k, v) = row?;
        let Ok(body) = decode_log(k.value(), v.value()) else {
            continue;
        };
        for e in body.chunks_exact(ENTRY) {
            let (h, s) = e.split_at(32);
            if let (Ok(h), Ok(s)) = (h.try_into(), s.try_into()) {
                all.push((h, s));
            }
        }
    }
    all.sort_unstable_by_key(|e| e.0);
    let mut idx: Rw<'_> = txn.open_table(HASH_INDEX)?;
    for (h, s) in &all {
        idx.insert(h.as_slice(), index_value(h, s).as_slice())?;
    }
    log.retain(|_, _| false)?;
    Ok(())
}

/// The slot a hash was committed at, if the index knows it.
pub(crate) fn lookup(
    idx: &impl ReadableTable<&'static [u8], &'static [u8]>,
    log: &impl ReadableTable<&'static [u8], &'static [u8]>,
    hash: &BundleHash,
) -> Result<Option<(WorkspaceId, ActorId, u64)>, StoreErr> {
    // A damaged index or log row locates nothing (the bundle is then asked
    // of peers by slot; `Store::rebuild` refills the index).
    if let Some(v) = idx.get(hash.0.as_slice())?
        && let Some(slot) = unseal(&hash.0, v.value()).and_then(parse_seq_key)
    {
        return Ok(Some(slot));
    }
    for row in log.iter()? {
        let (k, v) = row?;
        let Ok(body) = decode_log(k.value(), v.value()) else {
            continue;
        };
        if let Some(slot) = search_log(body, &hash.0) {
            return Ok(parse_seq_key(&slot));
        }
    }
    Ok(None)
}

/// Removes a hash from the index and the log (a withdrawn fork copy).
pub(crate) fn forget(txn: &WriteTransaction, hash: &BundleHash) -> Result<(), StoreErr> {
    txn.open_table(HASH_INDEX)?.remove(hash.0.as_slice())?;
    let mut log: Rw<'_> = txn.open_table(HASH_LOG)?;
    let mut rewrite: Vec<(Vec<u8>, Vec<Entry>)> = Vec::new();
    for row in log.iter()? {
        let (k, v) = row?;
        let Ok(body) = decode_log(k.value(), v.value()) else {
            continue;
        };
        if search_log(body, &hash.0).is_some() {
            let kept = body
                .chunks_exact(ENTRY)
                .filter(|e| e[..32] != hash.0)
                .filter_map(|e| Some((e[..32].try_into().ok()?, e[32..].try_into().ok()?)))
                .collect();
            rewrite.push((k.value().to_vec(), kept));
        }
    }
    for (k, kept) in rewrite {
        log.insert(k.as_slice(), encode_log(&k, &kept).as_slice())?;
    }
    Ok(())
}

/// Refills `hash_index` from `seq_hash` (empties the log) and repairs
/// author tips that fail their seal or lag the highest recorded slot. Part
/// of [`crate::Store::rebuild`].
pub(crate) fn rebuild_indexes(txn: &WriteTransaction) -> Result<(), StoreErr> {
    let mut all: Vec<Entry> = Vec::new();
    let mut top: std::collections::BTreeMap<[u8; 64], (u64, BundleHash)> = Default::default();
    {
        let seq_hash = txn.open_table(SEQ_HASH)?;
        for row in seq_hash.iter()? {
            let (k, v) = row?;
            let (Some(h), Ok(slot)) = (
                read_seq_hash(k.value(), v.value()),
                <[u8; 72]>::try_from(k.value()),
            ) else {
                continue;
            };
            all.push((h.0, slot));
            let (ws, author, seq) = parse_seq_key(&slot).ok_or(DamagedRow { what: "slot key" })?;
            let t = top.entry(author_key(&ws, &author)).or_insert((seq, h));
            if seq >= t.0 {
                *t = (seq, h);
            }
        }
    }
    txn.delete_table(HASH_INDEX)?;
    txn.delete_table(HASH_LOG)?;
    all.sort_unstable_by_key(|e| e.0);
    {
        let mut idx: Rw<'_> = txn.open_table(HASH_INDEX)?;
        for (h, s) in &all {
            idx.insert(h.as_slice(), index_value(h, s).as_slice())?;
        }
        txn.open_table(HASH_LOG)?;
    }
    let mut tips: Rw<'_> = txn.open_table(TIPS)?;
    for (ak, (seq, h)) in top {
        let keep = match tips.get(ak.as_slice())? {
            Some(v) => crate::commit::decode_tip(&ak, v.value()).is_ok_and(|t| t.0 >= seq),
            None => false,
        };
        if !keep {
            let v = crate::commit::encode_tip(&ak, seq, &h);
            tips.insert(ak.as_slice(), v.as_slice())?;
        }
    }
    Ok(())
}

/// Failures of the index helpers.
#[derive(Debug)]
pub(crate) enum StoreErr {
    Db(redb::Error),
    Damaged(DamagedRow),
}

impl From<redb::StorageError> for StoreErr {
    fn from(e: redb::StorageError) -> Self {
        StoreErr::Db(e.into())
    }
}
impl From<redb::TableError> for StoreErr {
    fn from(e: redb::TableError) -> Self {
        StoreErr::Db(e.into())
    }
}
impl From<DamagedRow> for StoreErr {
    fn from(e: DamagedRow) -> Self {
        StoreErr::Damaged(e)
    }
}

macro_rules! store_err_into {
    ($t:ty) => {
        impl From<StoreErr> for $t {
            fn from(e: StoreErr) -> Self {
                match e {
                    StoreErr::Db(e) => e.into(),
                    StoreErr::Damaged(d) => d.into(),
                }
            }
        }
    };
}
store_err_into!(crate::error::CommitError);
store_err_into!(crate::error::ReadError);
store_err_into!(crate::error::RebuildError);

impl From<StoreErr> for crate::quarantine::QuarantineErrorInner {
    fn from(e: StoreErr) -> Self {
        match e {
            StoreErr::Db(e) => Self::Db(e),
            StoreErr::Damaged(d) => Self::Damaged(d),
        }
    }
}
