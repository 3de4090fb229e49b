//! New incarnations: this device continues under a new actor key whenever it
//! may have lost bundles it already sent, so it never reuses a sequence number.
//!
//! A store that was salvaged, restored from a backup or copied to a second
//! device can hold an older chain than the one its peers hold. Writing on
//! from that chain would give two different bundles the same (author, seq),
//! which every member must then quarantine as a fork. So the device rotates
//! its key first:
//! - at open, when a salvage lost bundles this device wrote (or could not
//!   read part of the file, so it cannot tell);
//! - while syncing, when a peer sends a bundle of this device's actor that
//!   is newer than its own tip (a restore or a copy: someone holds what this
//!   store forgot), or a second, different bundle for one of its seqs.
//!
//! The old key is kept beside the new one (`actor.key.retired-<id>`), and in
//! every workspace the new actor's first bundle links it to the old one
//! (`troupe.member/<new>/previous_actor`) and carries the device's display
//! name, so history still reads "Sam (sound)" across the change. A running
//! node keeps its network identity until it restarts; only the signing key
//! changes at once.

use std::path::Path;

use rand::RngCore;
use tracing::warn;
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::crypto::ActorKey;
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::ActorId;
use troupe_protocol::path::FieldPath;
use troupe_protocol::value::Value;
use troupe_storage::SalvageReport;

use crate::identity::{self, KEY_FILE};
use crate::local::{Change, Local, LocalError};
use crate::ops::workspaces::MEMBER_TYPE;

/// Field (under `troupe.member/<new actor>/`) naming the actor this one continues.
pub const PREVIOUS_FIELD: &str = "previous_actor";

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Incarnation {
    /// The actor this device signed with until now.
    pub previous: ActorId,
    /// The actor it signs with from now on.
    pub current: ActorId,
    /// The link bundles written (one per workspace), for sync.
    pub changes: Vec<Change>,
}

/// Whether a salvage report means this device may have lost its own bundles.
pub fn salvage_lost_own(report: &SalvageReport, me: &ActorId) -> bool {
    !report.unreadable.is_empty() || report.lost.iter().any(|r| r.author == *me)
}

/// Rotates to a new actor key (see the module doc) and links it in every
/// workspace. `why` goes to the log and the link bundle's description.
///
/// # Errors
/// [`LocalError::Key`] when the key files cannot be written (nothing changed
/// then); [`LocalError`] from the link commits (the new key is in use).
pub fn start_new(local: &mut Local, data_dir: &Path, why: &str) -> Result<Incarnation, LocalError> {
    let previous = local.actor();
    let key_path = data_dir.join(KEY_FILE);
    let retired = data_dir.join(format!("{KEY_FILE}.retired-{}", previous.short()));
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    identity::write_private(&retired, &local.key_secret())
        .and_then(|()| identity::write_private(&key_path, &secret))
        .map_err(|e| LocalError::Key(e.to_string()))?;
    local.replace_key(ActorKey::from_secret_bytes(secret));
    let current = local.actor();
    warn!(%previous, %current, reason = why, "this device continues as a new incarnation (new actor key)");
    let mut changes = Vec::new();
    for ws in local.store().workspaces()? {
        let mut d = Draft::new(
            ws.id(),
            BundleKind::UserEdit,
            format!("new incarnation of this device: {why}"),
        );
        let field = |name: &str| {
            FieldPath::new(MEMBER_TYPE, &current.to_string(), name)
                .map_err(|e| LocalError::Invalid(e.to_string()))
        };
        d.set(
            field(PREVIOUS_FIELD)?,
            Value::Text(previous.to_string().into()),
            vec![],
        );
        if let Some(name) = local.device_name() {
            d.set(field("name")?, Value::Text(name.into()), vec![]);
        }
        let (_, change) = local.commit(d)?;
        changes.push(change);
    }
    Ok(Incarnation {
        previous,
        current,
        changes,
    })
}

/// File (in the data dir) recording which store file this device last
/// opened: the machine, the file's device and inode numbers, and its
/// creation time.
pub const STORE_ID_FILE: &str = "store.id";

/// Where a store file lives, as the operating system names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StoreIdentity {
    machine: String,
    dev: u64,
    ino: u64,
    /// The file's creation time in nanoseconds since the epoch, where the
    /// file system records one. A data dir deleted and restored from a backup
    /// often gets the freed inode number back; the restored file is still
    /// created anew. `None` in records written before this was kept.
    #[serde(default)]
    born: Option<u128>,
}

impl StoreIdentity {
    /// Whether both name the same file. A side without a creation time
    /// (an older record, a file system without one) is judged on the rest.
    fn same_file(&self, other: &Self) -> bool {
        self.machine == other.machine
            && self.dev == other.dev
            && self.ino == other.ino
            && match (self.born, other.born) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

fn machine_id() -> String {
    [
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
        "/proc/sys/kernel/hostname",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().to_owned())
    .unwrap_or_default()
}

fn identity_of(store_file: &Path) -> Option<StoreIdentity> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(store_file).ok()?;
        Some(StoreIdentity {
            machine: machine_id(),
            dev: m.dev(),
            ino: m.ino(),
            born: m
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos()),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = store_file;
        None
    }
}

/// Whether the store file is not the one this device last opened: the data
/// dir was restored from a backup or copied (a new file, or another
/// machine). A store opened for the first time records itself and passes.
/// The record is updated either way.
pub fn store_was_replaced(data_dir: &Path, store_file: &Path) -> bool {
    let Some(now) = identity_of(store_file) else {
        return false;
    };
    let record = data_dir.join(STORE_ID_FILE);
    let before: Option<StoreIdentity> = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if before.as_ref() != Some(&now)
        && let Ok(text) = serde_json::to_vec(&now)
    {
        let tmp = record.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &record);
        }
    }
    before.is_some_and(|b| !b.same_file(&now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_deleted_and_restored_is_replaced_even_on_a_reused_inode() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.redb");
        std::fs::write(&store, b"this week").unwrap();
        assert!(!store_was_replaced(dir.path(), &store), "first open");
        assert!(!store_was_replaced(dir.path(), &store), "same file");
        let backup = dir.path().join("backup");
        std::fs::copy(&store, &backup).unwrap();
        // Restore: delete, then a new copy; ext4 and tmpfs hand the freed
        // inode number straight back, which is the case this guards.
        std::fs::remove_file(&store).unwrap();
        std::fs::copy(&backup, &store).unwrap();
        assert!(store_was_replaced(dir.path(), &store), "restored file");
        assert!(!store_was_replaced(dir.path(), &store), "recorded again");
    }

    #[test]
    fn a_record_without_a_creation_time_still_recognises_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.redb");
        std::fs::write(&store, b"x").unwrap();
        let mut old = identity_of(&store).unwrap();
        old.born = None;
        std::fs::write(
            dir.path().join(STORE_ID_FILE),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        assert!(!store_was_replaced(dir.path(), &store));
    }
}
