//! Ops: field-granular changes. Each names, in `pred`, the ops it supersedes as
//! its writer saw them; that is all the register needs to find heads.

use serde::{Deserialize, Serialize};

use crate::ids::{BlobHash, EntityId, OpId};
use crate::limits;
use crate::path::FieldPath;
use crate::value::Value;

/// One change inside a bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Set a field. `pred` = the field's heads the writer replaced.
    Set {
        /// Which field.
        path: FieldPath,
        /// New value.
        value: Value,
        /// Ops this one supersedes.
        pred: Vec<OpId>,
    },
    /// Delete an entity: it acts on every field of the entity, superseding the
    /// heads named in `pred`. A field someone changed concurrently keeps that
    /// change as a head, so "edited while deleted" shows as a conflict.
    DeleteEntity {
        /// Entity type.
        entity_type: String,
        /// Entity id.
        entity_id: EntityId,
        /// The heads (of all its fields) the writer saw.
        pred: Vec<OpId>,
    },
    /// Record that an asset was deleted. Blob bytes are freed later by GC once no
    /// op inside the retention window references them.
    DeleteAsset {
        /// Which blob.
        hash: BlobHash,
        /// Why, in the user's words.
        reason: String,
    },
}

impl Op {
    /// The ops this one supersedes.
    pub fn pred(&self) -> &[OpId] {
        match self {
            Op::Set { pred, .. } | Op::DeleteEntity { pred, .. } => pred,
            Op::DeleteAsset { .. } => &[],
        }
    }

    /// Checks caps and rules on a decoded op.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.pred().len() > limits::MAX_PRED {
            return Err("too many pred entries in one op");
        }
        match self {
            Op::Set { path, value, .. } => {
                path.check()?;
                value.check()
            }
            Op::DeleteEntity {
                entity_type,
                entity_id,
                ..
            } => {
                crate::path::check_type(entity_type)?;
                if entity_id.is_valid() {
                    Ok(())
                } else {
                    Err("entity id invalid")
                }
            }
            Op::DeleteAsset { reason, .. } => {
                if reason.len() > limits::MAX_SUMMARY_BYTES {
                    Err("delete reason too long")
                } else {
                    Ok(())
                }
            }
        }
    }
}
