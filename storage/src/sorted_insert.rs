//! Writing a batch's new rows in key order, long runs through a redb cursor.
//!
//! # Why
//! `Table::insert` descends the B-tree once per row, and a leaf that fills
//! up is split in half. Rows that arrive in ascending key order (a run of
//! one author's bundles, appended after the author's last one) therefore
//! leave every leaf half full behind them, and each split rebuilds the
//! parent branch: in a 1M-write sync to an empty peer, leaf splits and
//! branch rebuilds were a quarter of the receiving storage thread's time.
//! A cursor's inserts into one gap are buffered and packed into full leaves
//! with one parent update (redb's `CursorMut::insert_before`).
//!
//! A cursor costs more than `insert` for a short run: it always builds new
//! leaves and a new parent, where `insert` changes a leaf already written in
//! this transaction in place. Measured on local group commits (runs of 4
//! bundles at 8 clients), the storage thread spent 2–10 % more a set when
//! every run went through a cursor. So only runs of [`MIN_RUN`] rows or more
//! do (a sync's batches: 64 and 256 bundles).
//!
//! New entity rows go the same way, a gap at a time: the state finds, with
//! the lookup that tells it a row is new, the key after the row's place
//! (see `TxnState::flush`), so new rows with the same key after them share
//! a gap. Entities named in one order sort in short gaps between the ones
//! already held (`p10000`–`p10009` sort before `p1001`), and an entity row
//! of ten fields is about 460 bytes, so a run of ten already splits leaves:
//! in the 1M-write sync (runs of ten), runs of [`ENTITY_MIN_RUN`] or more
//! through a cursor took the receiving storage thread from 0.90–1.00 s to
//! 0.82–0.94 s. A lone new row (an id far from the others) is still one
//! `insert`.
//!
//! Rows are held and written [`CHUNK`] at a time, not a whole batch at once:
//! holding a batch's rows (up to 512 bundles) until its end raised the
//! receiver's peak RSS in the 1M-write sync from 33–34 to 40–44 MiB, for
//! the same instruction count within 1 %.
//!
//! # Same result as `insert`
//! Rows are sorted within a chunk (stably: of two rows with one key, the
//! later one wins, as with two `insert`s; chunks are written in order). A
//! run is rows whose keys the caller says are adjacent: nothing can sort
//! between them (one author's consecutive seqs), so they share one gap. A
//! key already in the table ends the cursor's run and is overwritten with
//! `Table::insert`; the rest of the run goes on through a new cursor.

use std::ops::{Bound, Range};

use redb::{CursorError, Table};

/// The tables written this way (byte keys and values).
type ByteTable<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// Runs shorter than this are written with `Table::insert`.
const MIN_RUN: usize = 32;

/// Runs of new entity rows shorter than this are written with
/// `Table::insert`.
pub(crate) const ENTITY_MIN_RUN: usize = 8;

/// Rows held before they are written.
const CHUNK: usize = 2 * MIN_RUN;

/// Rows for one table, collected in arrival order and written in key
/// order, [`CHUNK`] at a time; [`SortedRows::finish`] writes the rest.
pub(crate) struct SortedRows<A> {
    /// Keys and values, one after the other.
    bytes: Vec<u8>,
    /// Each row's key and value in `bytes`.
    rows: Vec<(Range<usize>, Range<usize>)>,
    adjacent: A,
    min_run: usize,
}

impl<A: Fn(&[u8], &[u8]) -> bool> SortedRows<A> {
    /// No rows yet; `adjacent` says whether no key can sort between two.
    pub(crate) fn new(adjacent: A) -> Self {
        SortedRows {
            bytes: Vec::new(),
            rows: Vec::with_capacity(CHUNK),
            adjacent,
            min_run: MIN_RUN,
        }
    }

    /// As [`SortedRows::new`], with runs of `min_run` rows or more written
    /// through a cursor (rows small enough that a run of a few already
    /// splits leaves).
    pub(crate) fn with_min_run(adjacent: A, min_run: usize) -> Self {
        SortedRows {
            min_run,
            ..SortedRows::new(adjacent)
        }
    }

    /// Adds a row whose value `value` appends to the buffer it is given;
    /// writes the held rows when they make a chunk.
    pub(crate) fn push(
        &mut self,
        table: &mut ByteTable<'_>,
        key: &[u8],
        value: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), redb::Error> {
        let k = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let v = self.bytes.len();
        value(&mut self.bytes);
        self.rows.push((k..v, v..self.bytes.len()));
        if self.rows.len() >= CHUNK {
            self.finish(table)?;
        }
        Ok(())
    }

    /// Writes every held row.
    pub(crate) fn finish(&mut self, table: &mut ByteTable<'_>) -> Result<(), redb::Error> {
        let mut rows: Vec<(&[u8], &[u8])> = self
            .rows
            .iter()
            .map(|(k, v)| (&self.bytes[k.clone()], &self.bytes[v.clone()]))
            .collect();
        insert_sorted(table, &mut rows, &self.adjacent, self.min_run)?;
        self.rows.clear();
        self.bytes.clear();
        Ok(())
    }
}

/// Writes `rows` into `table` as that many `insert`s would; runs of at
/// least [`MIN_RUN`] rows whose consecutive keys are `adjacent` go through
/// cursor runs. Sorts `rows` in place.
fn insert_sorted(
    table: &mut ByteTable<'_>,
    rows: &mut [(&[u8], &[u8])],
    adjacent: impl Fn(&[u8], &[u8]) -> bool,
    min_run: usize,
) -> Result<(), redb::Error> {
    rows.sort_by(|a, b| a.0.cmp(b.0));
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        while end < rows.len() && adjacent(rows[end - 1].0, rows[end].0) {
            end += 1;
        }
        let run = &rows[start..end];
        if run.len() >= min_run {
            through_cursor(table, run)?;
        } else {
            for (k, v) in run {
                table.insert(*k, *v)?;
            }
        }
        start = end;
    }
    Ok(())
}

/// Writes one run of sorted rows through cursors.
fn through_cursor(table: &mut ByteTable<'_>, rows: &[(&[u8], &[u8])]) -> Result<(), redb::Error> {
    let mut i = 0;
    while i < rows.len() {
        let first = i;
        {
            let mut cursor = table.lower_bound_mut(Bound::Included(rows[i].0))?;
            while i < rows.len() {
                match cursor.insert_before(rows[i].0, rows[i].1) {
                    Ok(()) => i += 1,
                    Err(CursorError::UnorderedKey) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            cursor.close()?;
        }
        if i == first {
            // The key is already in the table (the entry after its gap),
            // or equal to the row before it.
            table.insert(rows[i].0, rows[i].1)?;
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase, TableDefinition};
    use std::collections::BTreeMap;

    const T: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("t");

    fn key(n: u16) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    fn num(k: &[u8]) -> u16 {
        u16::from_be_bytes([k[0], k[1]])
    }

    proptest! {
        /// Whatever was in the table, and whatever order, duplicates, runs
        /// and sizes the rows come in, the table ends as plain inserts
        /// leave it, whether the rows are written at once or a chunk at a
        /// time. `loose` calls every two keys adjacent, so cursor runs
        /// also meet existing keys between rows and must start again.
        #[test]
        fn same_table_as_plain_inserts(
            before in prop::collection::vec((0u16..600, 0usize..900), 0..300),
            scattered in prop::collection::vec((0u16..600, 0usize..900), 0..100),
            run_start in 0u16..600,
            run_sizes in prop::collection::vec(0usize..900, 0..120),
            loose in any::<bool>(),
            chunked in any::<bool>(),
            min_run in 1usize..40,
        ) {
            let file = tempfile::NamedTempFile::new().unwrap();
            let db = Database::create(file.path()).unwrap();
            let mut model = BTreeMap::new();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                for (k, len) in &before {
                    let v = vec![1u8; *len];
                    t.insert(key(*k).as_slice(), v.as_slice()).unwrap();
                    model.insert(key(*k), v);
                }
            }
            txn.commit().unwrap();
            let run = run_sizes.iter().enumerate().map(|(i, len)| (run_start + i as u16, *len));
            let batch: Vec<(Vec<u8>, Vec<u8>)> = scattered
                .iter()
                .copied()
                .chain(run)
                .enumerate()
                .map(|(i, (k, len))| (key(k), vec![(i % 250) as u8 + 2; len]))
                .collect();
            for (k, v) in &batch {
                model.insert(k.clone(), v.clone());
            }
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                let adjacent = move |a: &[u8], b: &[u8]| loose || num(b) <= num(a) + 1;
                if chunked {
                    let mut rows = SortedRows::with_min_run(adjacent, min_run);
                    for (k, v) in &batch {
                        rows.push(&mut t, k, |out| out.extend_from_slice(v)).unwrap();
                    }
                    rows.finish(&mut t).unwrap();
                } else {
                    let mut rows: Vec<(&[u8], &[u8])> =
                        batch.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
                    insert_sorted(&mut t, &mut rows, adjacent, min_run).unwrap();
                }
            }
            txn.commit().unwrap();
            let read = db.begin_read().unwrap();
            let t = read.open_table(T).unwrap();
            let got: BTreeMap<Vec<u8>, Vec<u8>> =
                crate::schema::owned_rows(&t).into_iter().collect();
            prop_assert_eq!(got, model);
        }
    }
}
