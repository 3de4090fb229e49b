//! A write that fails (a full disk, a failing disk) leaves the store
//! refusing everything until it is opened again, and says so; opened
//! again, it holds what was durable before the failure.

use troupe_protocol::testing::{chain, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_storage::Store;
use troupe_storage::testing::CrashBackend;

#[test]
fn a_failed_write_asks_for_a_reopen_and_the_reopened_store_holds_what_was_durable() {
    let ws = test_workspace().workspace_id();
    let (_, bundles) = chain(1, 10);
    let backend = CrashBackend::default();
    let store = Store::open_with_backend(backend.clone()).unwrap();
    store
        .add_workspace(&WorkspaceInfo::new(
            test_workspace(),
            "t",
            WorkspaceKind::Show,
        ))
        .unwrap();
    store
        .commit_batch(&ws, bundles[..5].to_vec(), "peer")
        .unwrap();
    assert!(
        store.needs_reopen().is_none(),
        "a working store needs no reopen"
    );

    backend.crash_now();
    assert!(
        store
            .commit_batch(&ws, bundles[5..].to_vec(), "peer")
            .is_err(),
        "the write fails"
    );
    assert!(
        store.needs_reopen().is_some(),
        "after a failed write the store must be opened again"
    );
    drop(store);

    let again = Store::open_with_backend(CrashBackend::from_image(backend.durable_image()))
        .expect("the store opens again");
    assert!(again.needs_reopen().is_none());
    let tip = again
        .author_tip(&ws, &bundles[0].body().author)
        .unwrap()
        .last_seq;
    assert_eq!(tip, 5, "what was durable before the failure is all there");
}
