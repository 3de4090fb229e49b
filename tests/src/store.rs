//! Data in a node's store, written and read while that node is stopped
//! (the daemon holds the store's lock while it runs).
//!
//! Writes go through `troupe_node::local::Local`, so they are signed by the
//! node's own identity exactly as its own edits would be.

use std::path::Path;

use anyhow::Context as _;
use troupe_node::identity::Identity;
use troupe_node::local::Local;
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::draft::Draft;
use troupe_protocol::path::FieldPath;
use troupe_protocol::value::Value;
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind, WorkspaceSecret};
use troupe_storage::Store;

/// The store file inside a data dir.
pub fn store_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("store.redb")
}

/// Opens (creating if needed) the data dir's identity and store, joins
/// `secret`'s workspace, and commits one bundle per `(TYPE/ID/FIELD, text)`
/// as this node's own edits.
///
/// # Errors
/// If the identity, the store or a commit fails.
pub fn write_fields(
    data_dir: &Path,
    secret: &WorkspaceSecret,
    edits: &[(&str, &str)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let (identity, _) = Identity::load_or_create(data_dir)?;
    let (mut local, _) = Local::open(data_dir, &identity)?;
    let ws = secret.workspace_id();
    if local.store().workspace(&ws)?.is_none() {
        let info = WorkspaceInfo::new(
            secret.clone(),
            format!("show {}", ws.short()),
            WorkspaceKind::Show,
        );
        local.store().add_workspace(&info)?;
    }
    for (path, text) in edits {
        let path: FieldPath = path.parse().with_context(|| format!("path {path}"))?;
        let mut d = Draft::new(ws, BundleKind::UserEdit, format!("set {path}"));
        d.set(path, Value::Text((*text).into()), vec![]);
        local.commit(d)?;
    }
    Ok(())
}

/// The texts a field holds in a stopped node's store, sorted: one when
/// settled, several when concurrent edits conflict, none when unset.
///
/// # Errors
/// If the store cannot be opened or read.
pub fn field_values(
    data_dir: &Path,
    secret: &WorkspaceSecret,
    path: &str,
) -> anyhow::Result<Vec<String>> {
    let store = Store::open(store_path(data_dir))?;
    let path: FieldPath = path.parse().with_context(|| format!("path {path}"))?;
    let mut out: Vec<String> = store
        .field_heads(&secret.workspace_id(), &path)?
        .into_iter()
        .map(|h| match h.value {
            Some(Value::Text(t)) => t.into_string(),
            other => format!("{other:?}"),
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Flips one byte inside the stored copy of `author`'s bundle `seq` in a
/// stopped node's store file, found by searching the file for its exact
/// encoded bytes. Returns the file offset that was changed.
///
/// # Errors
/// If the bundle is not held or its bytes are not found in the file.
pub fn corrupt_bundle(
    data_dir: &Path,
    secret: &WorkspaceSecret,
    seq: u64,
) -> anyhow::Result<usize> {
    let path = store_path(data_dir);
    let (identity, _) = Identity::load_or_create(data_dir)?;
    let bytes = {
        let store = Store::open(&path)?;
        let b = store
            .bundle(&secret.workspace_id(), &identity.actor_id(), seq)?
            .context("the bundle is held")?;
        b.bytes().to_vec()
    };
    let mut file = std::fs::read(&path)?;
    let at = file
        .windows(bytes.len())
        .position(|w| w == bytes.as_slice())
        .context("the bundle's bytes are stored verbatim")?;
    let flip = at + bytes.len() / 2;
    file[flip] ^= 0xff;
    std::fs::write(&path, file)?;
    Ok(flip)
}

/// Joins `secret`'s workspace in a stopped node's store and commits `n`
/// chained bundles by another author (as if received from a peer), each
/// setting `cue/bulk{i}/label` to `bulk {i}`. Fast: a few large transactions.
///
/// # Errors
/// If the store cannot be opened or a commit fails.
pub fn seed_history(data_dir: &Path, secret: &WorkspaceSecret, n: u64) -> anyhow::Result<()> {
    use troupe_protocol::crypto::ActorKey;
    use troupe_protocol::draft::AuthorTip;
    use troupe_protocol::hlc::Hlc;
    write_fields(data_dir, secret, &[])?;
    let store = Store::open(store_path(data_dir))?;
    let ws = secret.workspace_id();
    let key = ActorKey::from_secret_bytes([0x5e; 32]);
    let mut tip = AuthorTip::default();
    let mut batch = Vec::new();
    for i in 0..n {
        let mut d = Draft::new(ws, BundleKind::UserEdit, format!("bulk {i}"));
        let path = FieldPath::new("cue", &format!("bulk{i}"), "label")?;
        d.set(path, Value::Text(format!("bulk {i}").into()), vec![]);
        let b = d.sign(
            &key,
            &tip,
            Hlc {
                wall_ms: 1_000 + i,
                counter: 0,
            },
        )?;
        tip = AuthorTip::after(&b);
        batch.push(b);
        if batch.len() == 2_000 || i + 1 == n {
            let out = store.commit_batch(&ws, std::mem::take(&mut batch), "seed")?;
            anyhow::ensure!(out.quarantined.is_empty(), "seeded bundles verify");
        }
    }
    Ok(())
}

/// Rebuilds a stopped node's derived state from its bundles and returns how
/// many rows differ from what is stored (0 for a healthy store).
///
/// # Errors
/// If the store cannot be opened or read.
pub fn rebuild_differences(data_dir: &Path) -> anyhow::Result<usize> {
    let store = Store::open(store_path(data_dir))?;
    Ok(store.verify_rebuild()?.len())
}
