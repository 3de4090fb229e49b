//! Field paths: `entity_type/entity_id/field`, the unit of conflict detection.
//!
//! Entity types are namespaced by the plugin that owns them (`contacts.person`,
//! `schedule.event`); fields are lower-case names. Bindings between entities are
//! resolved to concrete paths before an op is written, so the register only
//! ever sees concrete paths.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::ids::{EntityId, truncate};
use crate::limits;

/// A type or field name: kept inline (no allocation) up to 24 bytes, which
/// every usual name fits. A received bundle carries four strings an op, and
/// allocating and freeing them was about an eighth of a 1M-write sync's CPU.
pub type Name = compact_str::CompactString;

/// One field of one entity.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FieldPath {
    /// Namespaced type, e.g. `contacts.person`.
    pub entity_type: Name,
    /// Entity id within the workspace.
    pub entity_id: EntityId,
    /// Field name, e.g. `name`.
    pub field: Name,
}

impl FieldPath {
    /// Builds and validates a path.
    ///
    /// # Errors
    /// [`ParseError::Path`] naming the part that is wrong.
    pub fn new(entity_type: &str, entity_id: &str, field: &str) -> Result<Self, ParseError> {
        check_type(entity_type).map_err(|why| ParseError::Path {
            why,
            found: truncate(entity_type),
        })?;
        check_field(field).map_err(|why| ParseError::Path {
            why,
            found: truncate(field),
        })?;
        Ok(FieldPath {
            entity_type: Name::new(entity_type),
            entity_id: EntityId::new(entity_id)?,
            field: Name::new(field),
        })
    }

    /// Whether a decoded path satisfies the rules.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        check_type(&self.entity_type)?;
        check_field(&self.field)?;
        if self.entity_id.is_valid() {
            Ok(())
        } else {
            Err("entity id invalid")
        }
    }

    /// The entity this field belongs to.
    pub fn entity(&self) -> (&str, &EntityId) {
        (&self.entity_type, &self.entity_id)
    }
}

/// One pass over the bytes (every op of every received bundle checks its
/// names): starts with a lower-case letter; then lower-case letters, digits,
/// `_`, and with `dots` single `.` separators, never last.
fn name_ok(s: &str, dots: bool) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > limits::MAX_NAME_BYTES || !b[0].is_ascii_lowercase() {
        return false;
    }
    let mut prev = b[0];
    for &c in &b[1..] {
        let ok = c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == b'_'
            || (dots && c == b'.' && prev != b'.');
        if !ok {
            return false;
        }
        prev = c;
    }
    prev != b'.'
}

/// Entity type rule: lower-case letters, digits, `_`, dot-separated namespaces.
pub(crate) fn check_type(s: &str) -> Result<(), &'static str> {
    if name_ok(s, true) {
        Ok(())
    } else {
        Err("entity type must be like `contacts.person`")
    }
}

fn check_field(s: &str) -> Result<(), &'static str> {
    if name_ok(s, false) {
        Ok(())
    } else {
        Err("field must be lower-case letters, digits and `_`")
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.entity_type, self.entity_id, self.field)
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for FieldPath {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(id), Some(f), None) => FieldPath::new(t, id, f),
            _ => Err(ParseError::Path {
                why: "expected entity_type/entity_id/field",
                found: truncate(s),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule as first written, several passes: the reference.
    fn name_ok_reference(s: &str, dots: bool) -> bool {
        !s.is_empty()
            && s.len() <= limits::MAX_NAME_BYTES
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (dots && b == b'.')
            })
            && !s.ends_with('.')
            && !s.contains("..")
    }

    proptest! {
        #[test]
        fn names_are_judged_as_the_reference_judges_them(
            s in "[a-c0-9_.A/é]{0,12}|[a-z][a-z0-9_.]{0,70}",
            dots in any::<bool>(),
        ) {
            prop_assert_eq!(name_ok(&s, dots), name_ok_reference(&s, dots), "{:?}", s);
        }
    }

    #[test]
    fn paths_parse_and_validate() {
        let p: FieldPath = "contacts.person/abc123/name".parse().unwrap();
        assert_eq!(p.entity_type, "contacts.person");
        assert_eq!(p.to_string(), "contacts.person/abc123/name");
        for bad in [
            "contacts.person/abc",
            "Contacts/x/name",
            "c/x/Name",
            "c./x/n",
            "c/x/n/extra",
            "c/x y/n",
        ] {
            assert!(bad.parse::<FieldPath>().is_err(), "{bad}");
        }
    }
}
