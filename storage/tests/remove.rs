//! Leaving a workspace with `--delete-data` removes every row of it in one
//! transaction and frees asset bytes no other workspace uses, while another
//! workspace in the same store keeps all its data and shared bytes.

use troupe_protocol::draft::Draft;
use troupe_protocol::hlc::Hlc;
use troupe_protocol::testing::key;
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind, WorkspaceSecret};
use troupe_protocol::{AssetRef, BlobHash, BundleKind, FieldPath, Value};
use troupe_storage::{CommitError, Store};

fn asset(hash: BlobHash) -> Value {
    Value::Asset(AssetRef {
        hash,
        name: "f".into(),
        size: 1,
        media_type: "text/plain".into(),
    })
}

#[test]
fn removing_a_workspace_deletes_its_rows_and_only_its_own_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("s.redb")).unwrap();
    let a = WorkspaceInfo::new(WorkspaceSecret([1; 32]), "A", WorkspaceKind::Show);
    let b = WorkspaceInfo::new(WorkspaceSecret([2; 32]), "B", WorkspaceKind::Show);
    s.add_workspace(&a).unwrap();
    s.add_workspace(&b).unwrap();
    let only_a = s.put_blob(b"only in a").unwrap();
    let shared = s.put_blob(b"in both").unwrap();
    let k = key(1);
    for (info, blobs) in [(&a, vec![only_a, shared]), (&b, vec![shared])] {
        let mut d = Draft::new(info.id(), BundleKind::UserEdit, "edit");
        let p: FieldPath = "contacts.person/jane/name".parse().unwrap();
        d.set(p, Value::from("Jane"), vec![]);
        for (i, h) in blobs.into_iter().enumerate() {
            d.set(
                format!("assets.file/f{i}/file").parse().unwrap(),
                asset(h),
                vec![],
            );
        }
        let tip = s.author_tip(&info.id(), &k.actor_id()).unwrap();
        let bundle = d
            .sign(
                &k,
                &tip,
                Hlc {
                    wall_ms: 1,
                    counter: 0,
                },
            )
            .unwrap();
        assert_eq!(s.commit_local(&bundle).unwrap().committed.len(), 1);
    }
    let report = s.remove_workspace(&a.id()).unwrap();
    assert!(report.rows > 5, "{report:?}");
    assert_eq!(report.blobs_freed, 1);
    assert!(s.workspace(&a.id()).unwrap().is_none());
    assert!(s.history(&a.id()).unwrap().is_empty());
    assert!(s.fields(&a.id()).unwrap().is_empty());
    assert!(s.ranges(&a.id()).unwrap().is_empty());
    assert!(s.get_blob(&only_a).is_err());
    // B is untouched, shared bytes included.
    assert_eq!(s.history(&b.id()).unwrap().len(), 1);
    assert_eq!(s.fields(&b.id()).unwrap().len(), 2);
    assert_eq!(s.get_blob(&shared).unwrap(), b"in both");
    assert!(matches!(
        s.remove_workspace(&a.id()),
        Err(CommitError::UnknownWorkspace(_))
    ));
}
