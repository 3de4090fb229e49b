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
//! bundles at 8 clients), the storage thread spent 6–10 % more a set when
//! every run went through a cursor. So only runs of [`MIN_RUN`] rows or more
//! do (a sync's batches: 64 and 256 bundles).
//!
//! # Same result as `insert`
//! Rows are sorted (stably: of two rows with one key, the later one wins,
//! as with two `insert`s). A run is rows whose keys the caller says are
//! adjacent: nothing can sort between them (one author's consecutive seqs),
//! so they share one gap. A key already in the table ends the cursor's run
//! and is overwritten with `Table::insert`; the rest of the run goes on
//! through a new cursor.

use std::ops::Bound;

use redb::{CursorError, Table};

/// A row to write: key and value bytes.
pub(crate) type Row = (Vec<u8>, Vec<u8>);

/// Runs shorter than this are written with `Table::insert`.
pub(crate) const MIN_RUN: usize = 32;

/// Writes `rows` into `table` as that many `insert`s would; runs of at
/// least [`MIN_RUN`] rows whose consecutive keys are `adjacent` go through
/// cursor runs. Sorts `rows` in place.
pub(crate) fn insert_sorted(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    rows: &mut [Row],
    adjacent: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<(), redb::Error> {
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        while end < rows.len() && adjacent(&rows[end - 1].0, &rows[end].0) {
            end += 1;
        }
        let run = &rows[start..end];
        if run.len() >= MIN_RUN {
            through_cursor(table, run)?;
        } else {
            for (k, v) in run {
                table.insert(k.as_slice(), v.as_slice())?;
            }
        }
        start = end;
    }
    Ok(())
}

/// Writes one run of sorted rows through cursors.
fn through_cursor(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    rows: &[Row],
) -> Result<(), redb::Error> {
    let mut i = 0;
    while i < rows.len() {
        let first = i;
        {
            let mut cursor = table.lower_bound_mut(Bound::Included(rows[i].0.as_slice()))?;
            while i < rows.len() {
                match cursor.insert_before(rows[i].0.as_slice(), rows[i].1.as_slice()) {
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
            table.insert(rows[i].0.as_slice(), rows[i].1.as_slice())?;
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
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
        /// leave it. `loose` calls every two keys adjacent, so cursor runs
        /// also meet existing keys between rows and must start again.
        #[test]
        fn same_table_as_plain_inserts(
            before in prop::collection::vec((0u16..600, 0usize..900), 0..300),
            scattered in prop::collection::vec((0u16..600, 0usize..900), 0..100),
            run_start in 0u16..600,
            run_sizes in prop::collection::vec(0usize..900, 0..120),
            loose in any::<bool>(),
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
            let mut batch: Vec<Row> = scattered
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
                let adjacent = |a: &[u8], b: &[u8]| loose || num(b) <= num(a) + 1;
                insert_sorted(&mut t, &mut batch, adjacent).unwrap();
            }
            txn.commit().unwrap();
            let read = db.begin_read().unwrap();
            let t = read.open_table(T).unwrap();
            let got: BTreeMap<Vec<u8>, Vec<u8>> = t
                .iter()
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value().to_vec(), v.value().to_vec())
                })
                .collect();
            prop_assert_eq!(got, model);
        }
    }
}
