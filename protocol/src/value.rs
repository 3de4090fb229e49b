//! Field values. Asset references carry their metadata inline, so state can be
//! rebuilt from the oplog without a single blob byte.

use serde::{Deserialize, Serialize};

use crate::ids::{BlobHash, EntityId};
use crate::limits;

/// A reference to a blob, with what a reader needs to show it without fetching it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AssetRef {
    /// blake3 of the plain bytes.
    pub hash: BlobHash,
    /// File name as the user gave it, e.g. "logo.png".
    pub name: String,
    /// Plain size in bytes.
    pub size: u64,
    /// e.g. "image/png".
    pub media_type: String,
}

/// A text value: kept inline (no allocation) up to 24 bytes, as most of a
/// crew's values are (names, phones, roles, times); see [`crate::path::Name`].
pub type Text = compact_str::CompactString;

/// The value of one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Explicitly empty.
    Null,
    /// true / false.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A finite float (NaN is refused so equality stays an equivalence).
    Float(f64),
    /// Text, e.g. a name or a cue description.
    Text(Text),
    /// Small binary data; anything large belongs in a blob.
    Bytes(Vec<u8>),
    /// A reference to another entity in the same workspace.
    Entity {
        /// Entity type, e.g. `contacts.person`.
        entity_type: String,
        /// Entity id.
        id: EntityId,
    },
    /// A reference to a blob.
    Asset(AssetRef),
}

impl Value {
    /// Checks the caps and rules a decoded value must meet.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        match self {
            Value::Float(f) if f.is_nan() => Err("float value is NaN"),
            Value::Text(t) if t.len() > limits::MAX_TEXT_BYTES => Err("text value too long"),
            Value::Bytes(b) if b.len() > limits::MAX_INLINE_BYTES => Err("bytes value too long"),
            Value::Entity { entity_type, id } => {
                crate::path::check_type(entity_type)?;
                if id.is_valid() {
                    Ok(())
                } else {
                    Err("entity reference id invalid")
                }
            }
            Value::Asset(a) => {
                if a.name.len() > limits::MAX_NAME_BYTES
                    || a.media_type.len() > limits::MAX_NAME_BYTES
                {
                    Err("asset name or media type too long")
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// The blob this value references, if any.
    pub fn asset(&self) -> Option<&AssetRef> {
        match self {
            Value::Asset(a) => Some(a),
            _ => None,
        }
    }

    /// A short human rendering for conflict descriptions and the CLI.
    pub fn display(&self) -> String {
        match self {
            Value::Null => "(empty)".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Text(t) => format!("'{}'", crate::ids::truncate(t)),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Entity { entity_type, id } => format!("{entity_type}/{id}"),
            Value::Asset(a) => format!("asset '{}' ({} bytes)", a.name, a.size),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s.into())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
