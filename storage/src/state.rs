//! The register's [`StateBackend`] on redb tables, inside a write transaction.

use redb::{ReadableTable, Table, WriteTransaction};
use troupe_protocol::hlc::Hlc;
use troupe_protocol::register::{self, ApplyReport, Head, Scope, StateBackend};
use troupe_protocol::{BlobHash, Bundle, EntityId, FieldPath, Op, OpId, Value, WorkspaceId};

use crate::error::DamagedRow;
use crate::schema::*;

/// Failure inside the state backend.
#[derive(Debug)]
pub(crate) enum StateError {
    Db(redb::Error),
    Damaged(DamagedRow),
}

impl From<redb::StorageError> for StateError {
    fn from(e: redb::StorageError) -> Self {
        StateError::Db(e.into())
    }
}

impl From<redb::TableError> for StateError {
    fn from(e: redb::TableError) -> Self {
        StateError::Db(e.into())
    }
}

macro_rules! state_into {
    ($t:ty) => {
        impl From<StateError> for $t {
            fn from(e: StateError) -> Self {
                match e {
                    StateError::Db(e) => e.into(),
                    StateError::Damaged(d) => d.into(),
                }
            }
        }
    };
}
state_into!(crate::error::CommitError);
state_into!(crate::error::RebuildError);
state_into!(crate::error::QuarantineError);

pub(crate) fn decode_heads(key: &[u8], bytes: &[u8]) -> Result<Vec<Head>, DamagedRow> {
    let body = unseal(key, bytes).ok_or(DamagedRow {
        what: "field heads",
    })?;
    postcard::from_bytes(body).map_err(|_| DamagedRow {
        what: "field heads",
    })
}

pub(crate) fn encode_heads(key: &[u8], heads: &[Head]) -> Result<Vec<u8>, DamagedRow> {
    postcard::to_allocvec(heads)
        .map(|b| seal(key, b))
        .map_err(|_| DamagedRow {
            what: "field heads (encode)",
        })
}

/// State tables of one write transaction, scoped to one workspace.
pub(crate) struct TxnState<'t> {
    pub(crate) ws: WorkspaceId,
    heads: Table<'t, &'static [u8], &'static [u8]>,
    deletes: Table<'t, &'static [u8], &'static [u8]>,
    superseded: Table<'t, &'static [u8], &'static [u8]>,
    asset_deletes: Table<'t, &'static [u8], &'static [u8]>,
    asset_refs: Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> TxnState<'t> {
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        ws: WorkspaceId,
    ) -> Result<Self, redb::TableError> {
        Ok(TxnState {
            ws,
            heads: txn.open_table(HEADS)?,
            deletes: txn.open_table(DELETES)?,
            superseded: txn.open_table(SUPERSEDED)?,
            asset_deletes: txn.open_table(ASSET_DELETES)?,
            asset_refs: txn.open_table(ASSET_REFS)?,
        })
    }

    /// Applies one verified bundle with the register rule, and records the
    /// asset references it makes (for blob GC).
    pub(crate) fn apply(&mut self, bundle: &Bundle) -> Result<ApplyReport, StateError> {
        let report = register::apply_bundle(self, bundle)?;
        let wall = bundle.body().hlc.wall_ms;
        for op in &bundle.body().ops {
            if let Op::Set {
                value: Value::Asset(a),
                ..
            } = op
            {
                let mut k = a.hash.0.to_vec();
                k.extend_from_slice(&self.ws.0);
                let old = match self.asset_refs.get(k.as_slice())? {
                    Some(v) => read_u64(v.value()).ok_or(StateError::Damaged(DamagedRow {
                        what: "asset reference",
                    }))?,
                    None => 0,
                };
                if wall >= old {
                    self.asset_refs
                        .insert(k.as_slice(), wall.to_be_bytes().as_slice())?;
                }
            }
        }
        Ok(report)
    }
}

pub(crate) fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

impl StateBackend for TxnState<'_> {
    type Error = StateError;

    fn field_heads(&mut self, path: &FieldPath) -> Result<Option<Vec<Head>>, StateError> {
        let k = field_key(&self.ws, path);
        match self.heads.get(k.as_slice())? {
            Some(v) => Ok(Some(
                decode_heads(&k, v.value()).map_err(StateError::Damaged)?,
            )),
            None => Ok(None),
        }
    }

    fn put_field_heads(&mut self, path: &FieldPath, heads: &[Head]) -> Result<(), StateError> {
        let k = field_key(&self.ws, path);
        let v = encode_heads(&k, heads).map_err(StateError::Damaged)?;
        self.heads.insert(k.as_slice(), v.as_slice())?;
        Ok(())
    }

    fn entity_fields(&mut self, ty: &str, id: &EntityId) -> Result<Vec<FieldPath>, StateError> {
        let prefix = entity_prefix(&self.ws, ty, id);
        let mut out = Vec::new();
        for row in self.heads.range(prefix.as_slice()..)? {
            let (k, _) = row?;
            let k = k.value();
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(
                parse_field_key(k).ok_or(StateError::Damaged(DamagedRow { what: "field key" }))?,
            );
        }
        Ok(out)
    }

    fn entity_deletes(&mut self, ty: &str, id: &EntityId) -> Result<Vec<Head>, StateError> {
        let k = entity_prefix(&self.ws, ty, id);
        match self.deletes.get(k.as_slice())? {
            Some(v) => Ok(decode_heads(&k, v.value()).map_err(StateError::Damaged)?),
            None => Ok(Vec::new()),
        }
    }

    fn put_entity_deletes(
        &mut self,
        ty: &str,
        id: &EntityId,
        heads: &[Head],
    ) -> Result<(), StateError> {
        let k = entity_prefix(&self.ws, ty, id);
        if heads.is_empty() {
            self.deletes.remove(k.as_slice())?;
        } else {
            let v = encode_heads(&k, heads).map_err(StateError::Damaged)?;
            self.deletes.insert(k.as_slice(), v.as_slice())?;
        }
        Ok(())
    }

    fn add_superseded(&mut self, scope: Scope<'_>, op: OpId) -> Result<(), StateError> {
        let k = superseded_key(&self.ws, scope, &op);
        self.superseded.insert(k.as_slice(), [].as_slice())?;
        Ok(())
    }

    fn is_superseded(&mut self, scope: Scope<'_>, op: OpId) -> Result<bool, StateError> {
        let k = superseded_key(&self.ws, scope, &op);
        Ok(self.superseded.get(k.as_slice())?.is_some())
    }

    fn record_asset_delete(
        &mut self,
        hash: &BlobHash,
        op: OpId,
        hlc: Hlc,
        reason: &str,
    ) -> Result<(), StateError> {
        let k = asset_delete_key(&self.ws, &hash.0, &op);
        let v = postcard::to_allocvec(&(hlc, reason)).map_err(|_| {
            StateError::Damaged(DamagedRow {
                what: "asset delete (encode)",
            })
        })?;
        self.asset_deletes.insert(k.as_slice(), v.as_slice())?;
        Ok(())
    }
}
