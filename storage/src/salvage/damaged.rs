//! Reading a damaged store file: read-only when redb allows it, otherwise
//! from a repaired scratch copy (the original is never modified), with every
//! redb call fenced by `catch_unwind` so a damaged page cannot take the node
//! down.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::with_suffix;
use crate::CACHE_BYTES;
use crate::error::SalvageError;
use crate::schema::Tbl;

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Read-only access to a damaged file, with every redb call fenced.
pub(super) struct Damaged {
    db: Box<dyn ReadableDatabase>,
    _scratch: Option<Scratch>,
}

/// A scratch copy of the damaged file, removed when salvage is done.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover scratch file is harmless and replaced next time.
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) fn fenced<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err("redb panicked on a damaged page".to_string()),
    }
}

impl Damaged {
    pub(super) fn open(path: &Path) -> Result<Damaged, SalvageError> {
        let ro = fenced(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .open_read_only(path)
                .map_err(|e| e.to_string())
        });
        if let Ok(db) = ro {
            return Ok(Damaged {
                db: Box::new(db),
                _scratch: None,
            });
        }
        // redb wants a repair (an unclean shutdown): repair a scratch copy,
        // never the damaged original.
        let scratch = Scratch(with_suffix(path, ".salvage-scratch"));
        std::fs::copy(path, &scratch.0).map_err(SalvageError::Io)?;
        let db = fenced(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .open(&scratch.0)
                .map_err(|e| e.to_string())
        })
        .map_err(SalvageError::Unreadable)?;
        Ok(Damaged {
            db: Box::new(db),
            _scratch: Some(scratch),
        })
    }

    /// Every row of a table it can read, in key order, and whether it reached the end.
    pub(super) fn rows(&self, t: Tbl) -> (Rows, Option<String>) {
        let mut rows = Vec::new();
        let r = fenced(|| {
            let txn = self.db.begin_read().map_err(|e| e.to_string())?;
            let tbl = match txn.open_table(t) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            for row in tbl.iter().map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| e.to_string())?;
                rows.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(())
        });
        (rows, r.err())
    }

    /// Point reads of `keys` (each fenced), for slots a damaged scan missed.
    pub(super) fn get_each(&self, t: Tbl, keys: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut txn = None;
        for k in keys {
            let got = fenced(|| {
                if txn.is_none() {
                    txn = Some(self.db.begin_read().map_err(|e| e.to_string())?);
                }
                let tx = txn.as_ref().ok_or("no transaction")?;
                let tbl = tx.open_table(t).map_err(|e| e.to_string())?;
                let v = tbl.get(k.as_slice()).map_err(|e| e.to_string())?;
                Ok(v.map(|v| v.value().to_vec()))
            });
            match got {
                Ok(Some(v)) => out.push((k.clone(), v)),
                Ok(None) => {}
                Err(_) => txn = None,
            }
        }
        out
    }
}
