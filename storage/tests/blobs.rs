//! Blobs are content-addressed, deduplicated and verified; a partial receive
//! stays invisible until its full length hashes to its name (a wrong one is
//! discarded with a typed error); GC frees bytes only outside every
//! referencing workspace's retention window, after which reads answer
//! `Unavailable` while state (and rebuild) stay intact.

use troupe_protocol::draft::{AuthorTip, Draft};
use troupe_protocol::hlc::Hlc;
use troupe_protocol::sync::oplog_view::{BlobState, OplogView};
use troupe_protocol::testing::{key, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_protocol::{AssetRef, BlobHash, BundleKind, FieldPath, Value};
use troupe_storage::{BlobError, Store};

const DAY: u64 = 24 * 60 * 60 * 1000;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("b.redb")).unwrap();
    s.add_workspace(&WorkspaceInfo::new(
        test_workspace(),
        "t",
        WorkspaceKind::Show,
    ))
    .unwrap();
    (dir, s)
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn put_get_dedup_and_ranges() {
    let (_d, s) = store();
    let bytes = data(2_500_000, 1);
    let h = s.put_blob(&bytes).unwrap();
    assert_eq!(h.0, *blake3::hash(&bytes).as_bytes());
    assert_eq!(s.put_blob(&bytes).unwrap(), h, "dedup");
    assert_eq!(s.get_blob(&h).unwrap(), bytes);
    let v = s.view().unwrap();
    assert_eq!(
        v.blob_state(&h).unwrap(),
        BlobState::Complete { size: 2_500_000 }
    );
    let at = (1 << 20) - 10;
    assert_eq!(
        v.blob_range(&h, at, 100).unwrap().unwrap(),
        bytes[at as usize..at as usize + 100]
    );
    assert!(matches!(
        s.get_blob(&BlobHash([7; 32])),
        Err(BlobError::NotFound(_))
    ));
}

#[test]
fn partial_receive_is_invisible_until_verified() {
    let (_d, s) = store();
    let bytes = data(300_000, 2);
    let h = BlobHash(*blake3::hash(&bytes).as_bytes());
    assert_eq!(s.blob_begin(&h, bytes.len() as u64).unwrap(), 0);
    assert!(!s.blob_write_chunk(&h, 0, &bytes[..100_000]).unwrap());
    assert!(matches!(s.get_blob(&h), Err(BlobError::NotFound(_))));
    assert!(matches!(
        s.blob_write_chunk(&h, 5, &bytes[..10]),
        Err(BlobError::Offset {
            expected: 100_000,
            got: 5
        })
    ));
    // Resume from where it stopped.
    assert_eq!(s.blob_begin(&h, bytes.len() as u64).unwrap(), 100_000);
    assert_eq!(
        s.blob_state(&h).unwrap(),
        BlobState::Partial {
            verified_len: 100_000,
            size: 300_000
        }
    );
    assert!(s.blob_write_chunk(&h, 100_000, &bytes[100_000..]).unwrap());
    assert_eq!(s.get_blob(&h).unwrap(), bytes);

    // A receive whose bytes do not match its name is discarded.
    let other = BlobHash([9; 32]);
    s.blob_begin(&other, 10).unwrap();
    assert!(matches!(
        s.blob_write_chunk(&other, 0, &[1; 10]),
        Err(BlobError::HashMismatch { .. })
    ));
    assert_eq!(s.blob_state(&other).unwrap(), BlobState::Absent);
}

#[test]
fn gc_respects_retention_and_leaves_state_intact() {
    let (_d, s) = store();
    let ws = test_workspace().workspace_id();
    let bytes = data(5000, 3);
    let h = s.put_blob(&bytes).unwrap();
    let path: FieldPath = "cues.cue/c1/sound".parse().unwrap();
    let asset = Value::Asset(AssetRef {
        hash: h,
        name: "thunder.wav".into(),
        size: 5000,
        media_type: "audio/wav".into(),
    });
    let written_at = 1_000 * DAY;
    let mut d = Draft::new(ws, BundleKind::UserEdit, "sound");
    d.set(path.clone(), asset.clone(), vec![]);
    let b = d
        .sign(
            &key(1),
            &AuthorTip::default(),
            Hlc {
                wall_ms: written_at,
                counter: 0,
            },
        )
        .unwrap();
    s.commit_local(&b).unwrap();
    s.set_retention_days(&ws, 10).unwrap();

    assert!(s.gc_blobs(written_at + 9 * DAY).unwrap().freed.is_empty());
    assert_eq!(s.get_blob(&h).unwrap(), bytes);
    let r = s.gc_blobs(written_at + 11 * DAY).unwrap();
    assert_eq!(r.freed, vec![h]);
    assert!(matches!(s.get_blob(&h), Err(BlobError::Unavailable(_))));
    assert_eq!(s.blob_state(&h).unwrap(), BlobState::Unavailable);
    assert_eq!(s.value(&ws, &path).unwrap(), Some(asset.clone()));
    s.rebuild().unwrap();
    assert_eq!(s.value(&ws, &path).unwrap(), Some(asset));
    assert!(s.verify_rebuild().unwrap().is_empty());
    // Putting it again makes it available again.
    s.put_blob(&bytes).unwrap();
    assert_eq!(s.get_blob(&h).unwrap(), bytes);
}

fn noise(len: usize) -> Vec<u8> {
    troupe_protocol::testing::noise(len, 1)
}

#[test]
fn whole_chunk_receive_resumes_after_reopen_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let bytes = noise((3 << 20) + 12_345);
    let h = troupe_protocol::BlobHash(*blake3::hash(&bytes).as_bytes());
    let size = bytes.len() as u64;
    let pieces: Vec<&[u8]> = bytes.chunks(1 << 20).collect();
    {
        let s = troupe_storage::Store::open(&path).unwrap();
        assert!(!s.blob_receive_deferred(&h, size, 0, pieces[0]).unwrap());
        assert!(
            !s.blob_receive_deferred(&h, size, 1 << 20, pieces[1])
                .unwrap()
        );
        s.flush().unwrap();
        assert!(matches!(
            s.get_blob(&h),
            Err(troupe_storage::BlobError::NotFound(_))
        ));
    }
    // A new process: no running hash; the held chunks are read back.
    let s = troupe_storage::Store::open(&path).unwrap();
    assert_eq!(s.blob_begin(&h, size).unwrap(), 2 << 20);
    assert!(
        !s.blob_receive_deferred(&h, size, 2 << 20, pieces[2])
            .unwrap()
    );
    assert!(
        s.blob_receive_deferred(&h, size, 3 << 20, pieces[3])
            .unwrap()
    );
    assert_eq!(s.get_blob(&h).unwrap(), bytes);
}

#[test]
fn whole_chunk_receive_with_a_bad_chunk_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let s = troupe_storage::Store::open(dir.path().join("s.redb")).unwrap();
    let bytes = noise(2 << 20);
    let h = troupe_protocol::BlobHash(*blake3::hash(&bytes).as_bytes());
    let mut bad = bytes[1 << 20..].to_vec();
    bad[7] ^= 1;
    assert!(
        !s.blob_receive_deferred(&h, 2 << 20, 0, &bytes[..1 << 20])
            .unwrap()
    );
    assert!(matches!(
        s.blob_receive_deferred(&h, 2 << 20, 1 << 20, &bad),
        Err(troupe_storage::BlobError::HashMismatch { .. })
    ));
    assert_eq!(
        s.blob_state(&h).unwrap(),
        troupe_protocol::sync::oplog_view::BlobState::Absent
    );
    // Starting again from zero works.
    assert!(
        !s.blob_receive_deferred(&h, 2 << 20, 0, &bytes[..1 << 20])
            .unwrap()
    );
    assert!(
        s.blob_receive_deferred(&h, 2 << 20, 1 << 20, &bytes[1 << 20..])
            .unwrap()
    );
    assert_eq!(s.get_blob(&h).unwrap(), bytes);
}

#[test]
fn incompressible_and_compressible_chunks_read_back_verified() {
    let (_d, s) = store();
    // Noise is stored raw, text compressed; both read back whole and by range.
    let mut mixed = noise((2 << 20) + 100);
    mixed.extend(std::iter::repeat_n(b"cue 12 follows cue 11. ".as_slice(), 50_000).flatten());
    let h = s.put_blob(&mixed).unwrap();
    assert_eq!(s.get_blob(&h).unwrap(), mixed);
    let view = s.view().unwrap();
    for (offset, len) in [
        (0u64, 1u32 << 20),
        (1 << 20, 1 << 20),
        (3 << 20, 1 << 20),
        (5, 70_000),
    ] {
        let got = view.blob_range(&h, offset, len).unwrap().unwrap();
        let end = (offset as usize + len as usize).min(mixed.len());
        assert_eq!(got, &mixed[offset as usize..end]);
        // Read into a frame being built: after what it already holds.
        let mut frame = b"header".to_vec();
        assert!(view.blob_range_into(&h, offset, len, &mut frame).unwrap());
        assert_eq!(&frame[..6], b"header");
        assert_eq!(&frame[6..], &mixed[offset as usize..end]);
    }
    let mut frame = b"header".to_vec();
    let absent = troupe_protocol::BlobHash([9; 32]);
    assert!(
        !view
            .blob_range_into(&absent, 0, 1 << 20, &mut frame)
            .unwrap()
    );
    assert_eq!(frame, b"header");
    assert!(
        s.scrub_report().unwrap().blobs.is_empty(),
        "scrub accepts both kinds of row"
    );
}

#[test]
fn a_run_of_received_chunks_refuses_only_the_bad_one() {
    use troupe_storage::ReceivedChunk;
    let (_d, s) = store();
    let a = noise(1_000);
    let b = data(2_000, 3);
    let c = noise((1 << 20) + 10);
    let hash = |x: &[u8]| BlobHash(*blake3::hash(x).as_bytes());
    let mut bad_b = b.clone();
    bad_b[0] ^= 1;
    let chunk = |hash, bytes, size: usize, offset| ReceivedChunk {
        hash,
        size: size as u64,
        offset,
        bytes,
    };
    let r = s
        .blob_receive_many(&[
            chunk(hash(&a), &a, a.len(), 0),
            chunk(hash(&b), &bad_b, b.len(), 0),
            // Not where the receive stands: refused alone.
            chunk(hash(&c), &c[1 << 20..], c.len(), 1 << 20),
            chunk(hash(&c), &c[..1 << 20], c.len(), 0),
            chunk(hash(&c), &c[1 << 20..], c.len(), 1 << 20),
        ])
        .unwrap();
    assert!(matches!(r[0], Ok(true)));
    assert!(matches!(r[1], Err(BlobError::HashMismatch { .. })));
    assert!(matches!(r[2], Err(BlobError::NotReceiving(_))));
    assert!(matches!(r[3], Ok(false)));
    assert!(matches!(r[4], Ok(true)));
    s.flush().unwrap();
    assert_eq!(s.get_blob(&hash(&a)).unwrap(), a);
    assert_eq!(s.get_blob(&hash(&c)).unwrap(), c);
    assert!(matches!(s.get_blob(&hash(&b)), Err(BlobError::NotFound(_))));
    // Nothing of the bad copy is kept: the good one arrives as if first.
    assert_eq!(s.blob_state(&hash(&b)).unwrap(), BlobState::Absent);
    let r = s
        .blob_receive_many(&[chunk(hash(&b), &b, b.len(), 0)])
        .unwrap();
    assert!(matches!(r[0], Ok(true)));
    assert_eq!(s.get_blob(&hash(&b)).unwrap(), b);
}

#[test]
fn an_incompressible_asset_takes_about_its_own_size_on_disk() {
    use troupe_storage::ReceivedChunk;
    // Photos and recordings do not compress: each 1 MiB chunk is stored
    // raw. A row just over 1 MiB used to take a 2 MiB run of pages, so the
    // file (and every byte written to disk) was twice the asset.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    // Blocks on disk: redb grows the file's length ahead of use (sparse).
    let on_disk = || std::fs::metadata(&path).unwrap().blocks() * 512;
    let empty = on_disk();
    let bytes = noise(32 << 20);
    let h = BlobHash(*blake3::hash(&bytes).as_bytes());
    let chunks: Vec<ReceivedChunk<'_>> = bytes
        .chunks(1 << 20)
        .enumerate()
        .map(|(j, b)| ReceivedChunk {
            hash: h,
            size: bytes.len() as u64,
            offset: (j as u64) << 20,
            bytes: b,
        })
        .collect();
    for run in chunks.chunks(8) {
        let done = s.blob_receive_many(run).unwrap();
        assert!(done.iter().all(|r| r.is_ok()));
    }
    s.flush().unwrap();
    let grown = on_disk() - empty;
    assert!(
        grown < (bytes.len() as u64) * 9 / 8,
        "the file took {grown} more bytes of disk for a {} byte asset",
        bytes.len()
    );
    assert_eq!(s.get_blob(&h).unwrap(), bytes);
    assert!(s.scrub_report().unwrap().blobs.is_empty());
}

#[test]
fn a_large_receive_goes_in_runs_that_fit_the_write_buffer_and_arrives_whole() {
    use troupe_storage::{ReceivedChunk, blob_receive_runs};
    let (_d, s) = store();
    let big = noise((9 << 20) + 123);
    let small = noise(700);
    let hash = |x: &[u8]| BlobHash(*blake3::hash(x).as_bytes());
    let chunk = |hash, bytes, size: usize, offset| ReceivedChunk {
        hash,
        size: size as u64,
        offset,
        bytes,
    };
    let mut chunks: Vec<ReceivedChunk<'_>> = big
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, c)| chunk(hash(&big), c, big.len(), (i as u64) << 20))
        .collect();
    chunks.push(chunk(hash(&small), &small, small.len(), 0));

    let runs: Vec<&[ReceivedChunk<'_>]> = blob_receive_runs(&chunks).collect();
    // Every chunk once, in order, in runs of at most two whole chunks
    // (redb's write buffer holds 3 MiB).
    let flat: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.iter().map(|c| c.offset))
        .collect();
    assert_eq!(flat, chunks.iter().map(|c| c.offset).collect::<Vec<_>>());
    assert!(runs.iter().all(|r| !r.is_empty()));
    assert!(
        runs.iter()
            .all(|r| r.iter().map(|c| c.bytes.len()).sum::<usize>() < 3 << 20),
        "{:?}",
        runs.iter().map(|r| r.len()).collect::<Vec<_>>()
    );
    assert!(runs.len() >= 5);

    for run in &runs {
        let out = s.blob_receive_many(run).unwrap();
        assert!(out.iter().all(Result::is_ok));
    }
    s.flush().unwrap();
    assert_eq!(s.get_blob(&hash(&big)).unwrap(), big);
    assert_eq!(s.get_blob(&hash(&small)).unwrap(), small);

    // A chunk larger than a run's budget still gets a run of its own.
    let huge = vec![7u8; 4 << 20];
    let odd = [
        chunk(hash(&small), &small, small.len(), 0),
        chunk(hash(&huge), &huge, huge.len(), 0),
    ];
    let runs: Vec<usize> = blob_receive_runs(&odd).map(<[_]>::len).collect();
    assert_eq!(runs, vec![1, 1]);
    assert_eq!(blob_receive_runs(&[]).count(), 0);
}

#[test]
fn blobs_received_in_many_calls_never_share_rows_even_across_a_reopen() {
    use troupe_storage::ReceivedChunk;
    // Each call gives out row numbers from one reading of the counter: the
    // counter must move past all of them, or a later call's blobs would
    // write over an earlier call's rows.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.redb");
    let hash = |x: &[u8]| BlobHash(*blake3::hash(x).as_bytes());
    let small: Vec<Vec<u8>> = (0..12)
        .map(|i| troupe_protocol::testing::noise(300 + i * 7, i as u64 + 10))
        .collect();
    let big: &'static [u8] = troupe_protocol::testing::noise((1 << 20) + 500, 3).leak();
    fn whole(b: &[u8]) -> ReceivedChunk<'_> {
        ReceivedChunk {
            hash: BlobHash(*blake3::hash(b).as_bytes()),
            size: b.len() as u64,
            offset: 0,
            bytes: b,
        }
    }
    let part = |offset: usize, bytes: &'static [u8]| ReceivedChunk {
        hash: hash(big),
        size: big.len() as u64,
        offset: offset as u64,
        bytes,
    };
    {
        let s = Store::open(&path).unwrap();
        // Three small blobs and the start of a large one (a receive record
        // takes a number too), then three more and the large one's end.
        let first = [
            whole(&small[0]),
            part(0, &big[..1 << 20]),
            whole(&small[1]),
            whole(&small[2]),
        ];
        let second = [
            whole(&small[3]),
            whole(&small[4]),
            part(1 << 20, &big[1 << 20..]),
            whole(&small[5]),
        ];
        for call in [&first[..], &second[..]] {
            let answers = s.blob_receive_many(call).unwrap();
            assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        }
        // The one-blob paths share the counter.
        s.put_blob(&small[6]).unwrap();
        assert!(matches!(
            s.blob_receive_many(&[whole(&small[7])]).unwrap()[0],
            Ok(true)
        ));
        s.flush().unwrap();
    }
    let s = Store::open(&path).unwrap();
    let more: Vec<ReceivedChunk<'_>> = small[8..].iter().map(|b| whole(b)).collect();
    assert!(
        s.blob_receive_many(&more)
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    for b in &small {
        assert_eq!(&s.get_blob(&hash(b)).unwrap(), b);
    }
    assert_eq!(s.get_blob(&hash(big)).unwrap(), big);
    assert!(s.scrub_report().unwrap().blobs.is_empty());
    let states = s
        .blob_states(small.iter().map(|b| hash(b)).collect::<Vec<_>>().iter())
        .unwrap();
    assert_eq!(states.len(), small.len());
    for (st, b) in states.iter().zip(&small) {
        assert_eq!(
            st.as_ref().unwrap(),
            &BlobState::Complete {
                size: b.len() as u64
            }
        );
    }
}
