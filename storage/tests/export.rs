//! Export writes a workspace's whole current state as JSON (shown values,
//! conflicts with every head, assets with their files) without the workspace
//! secret, and still works from a damaged store file via salvage.

use troupe_protocol::draft::Draft;
use troupe_protocol::hlc::Hlc;
use troupe_protocol::testing::{key, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_protocol::{AssetRef, BlobHash, BundleKind, FieldPath, Value};
use troupe_storage::{Store, export_damaged};

fn fixture(path: &std::path::Path) -> BlobHash {
    let s = Store::open(path).unwrap();
    s.add_workspace(&WorkspaceInfo::new(
        test_workspace(),
        "Tour",
        WorkspaceKind::Show,
    ))
    .unwrap();
    let ws = test_workspace().workspace_id();
    let logo = s.put_blob(b"a small logo").unwrap();
    let name: FieldPath = "contacts.person/jane/name".parse().unwrap();
    for (i, (seed, text)) in [(1u8, "Jane Doe"), (2, "Jane D.")].into_iter().enumerate() {
        let k = key(seed);
        let mut d = Draft::new(ws, BundleKind::UserEdit, "edit");
        d.set(name.clone(), Value::from(text), vec![]);
        if seed == 1 {
            d.set(
                "contacts.person/jane/photo".parse().unwrap(),
                Value::Asset(AssetRef {
                    hash: logo,
                    name: "../../etc/passwd".into(),
                    size: 12,
                    media_type: "image/png".into(),
                }),
                vec![],
            );
            d.set(
                "contacts.person/jane/cv".parse().unwrap(),
                Value::Asset(AssetRef {
                    hash: BlobHash([5; 32]),
                    name: "cv.pdf".into(),
                    size: 1000,
                    media_type: "application/pdf".into(),
                }),
                vec![],
            );
        }
        let tip = s.author_tip(&ws, &k.actor_id()).unwrap();
        let hlc = Hlc {
            wall_ms: 1_700_000_000_000 + i as u64,
            counter: 0,
        };
        let b = d.sign(&k, &tip, hlc).unwrap();
        s.commit_local(&b).unwrap();
    }
    logo
}

fn read_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap()
}

#[test]
fn export_writes_state_conflicts_and_assets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troupe.redb");
    let logo = fixture(&path);
    let s = Store::open(&path).unwrap();
    let ws = test_workspace().workspace_id();
    let out = dir.path().join("export");
    let r = s.export(&ws, &out).unwrap();
    assert_eq!((r.fields, r.conflicts, r.assets_written), (3, 1, 1));
    assert_eq!(r.assets_missing, vec![BlobHash([5; 32])]);
    let j = read_json(&out);
    assert_eq!(j["format"], "troupe-export/1");
    assert_eq!(j["workspace"]["name"], "Tour");
    let jane = &j["entities"][0];
    assert_eq!(
        (&jane["type"], &jane["id"]),
        (&"contacts.person".into(), &"jane".into())
    );
    let name = &jane["fields"]["name"];
    assert_eq!(name["conflict"], true);
    assert_eq!(name["heads"].as_array().unwrap().len(), 2);
    // The shown value is the deterministic winner (later hlc).
    assert_eq!(name["value"], "Jane D.");
    assert_eq!(
        std::fs::read(out.join("assets").join(logo.to_string())).unwrap(),
        b"a small logo"
    );
    let text = std::fs::read_to_string(out.join("state.json")).unwrap();
    assert!(!text.contains(&test_workspace().to_hex()), "secret leaked");
    assert!(text.contains("not held here"));
}

#[test]
fn export_works_from_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troupe.redb");
    fixture(&path);
    let mut img = std::fs::read(&path).unwrap();
    // Damage a page at the end of the file (the last one written).
    let n = img.len();
    img[n - 2000..n - 1000].fill(0xff);
    std::fs::write(&path, &img).unwrap();
    let before = std::fs::read(&path).unwrap();
    let out = dir.path().join("export");
    let ws = test_workspace().workspace_id();
    let r = export_damaged(&path, &ws, &out).unwrap();
    assert!(r.salvage.is_some());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the damaged file is left as it was"
    );
    let j = read_json(&out);
    // Whatever survived is exported consistently; fields present have values.
    for e in j["entities"].as_array().unwrap() {
        for (_, f) in e["fields"].as_object().unwrap() {
            assert!(!f["heads"].as_array().unwrap().is_empty() || f["value"].is_null());
        }
    }
    assert!(!out.join(".salvaged-copy.redb").exists());
}
