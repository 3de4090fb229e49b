//! In-memory pair sync through the real engine and wire format: 100,000
//! bundles (10 contact fields each, 1M field ops) from a full node to an empty
//! one; a 1,000-bundle catch-up; and a no-op re-sync. Prints time and bytes on
//! the wire (every frame both ways, batches zstd-compressed).
//!
//! Run: `cargo bench -p troupe-protocol --features testing --bench sync_pair`

#![allow(clippy::disallowed_methods)] // a benchmark is a driver: it reads the clock

use std::time::Instant;

use troupe_protocol::bundle::{Bundle, BundleKind};
use troupe_protocol::crypto::ActorKey;
use troupe_protocol::draft::{AuthorTip, Draft};
use troupe_protocol::hlc::HlcClock;
use troupe_protocol::path::FieldPath;
use troupe_protocol::sync::PeerId;
use troupe_protocol::sync::testing::Net;
use troupe_protocol::testing::workload::{FIELDS, contact_value};
use troupe_protocol::workspace::WorkspaceSecret;

fn bundles(secret: &WorkspaceSecret, n: usize) -> Vec<Bundle> {
    let ws = secret.workspace_id();
    let key = ActorKey::from_secret_bytes([9; 32]);
    let mut clock = HlcClock::default();
    let mut tip = AuthorTip::default();
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut d = Draft::new(ws, BundleKind::UserEdit, "Add contact");
        for f in FIELDS {
            let path = FieldPath::new("contacts.person", &format!("p{i}"), f).expect("valid path");
            d.set(path, contact_value(&mut rng, f, i), vec![]);
        }
        let b = d
            .sign(&key, &tip, clock.tick(1_700_000_000_000 + i as u64))
            .expect("signs");
        tip = AuthorTip::after(&b);
        out.push(b);
    }
    out
}

/// Syncs node 1 from node 0 and returns (seconds, bytes on the wire both ways).
fn sync(secret: &WorkspaceSecret, have: &[Bundle], already: usize) -> (f64, u64, u64) {
    let mut net = Net::new(vec![
        (PeerId([1; 32]), vec![secret.clone()]),
        (PeerId([2; 32]), vec![secret.clone()]),
    ]);
    net.record_frames = false;
    net.nodes[0].view.commit(have);
    net.nodes[1].view.commit(&have[..already]);
    let t = Instant::now();
    net.connect(0, 1);
    net.drive_bounded(10_000_000);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(net.nodes[1].view.bundles.len(), have.len(), "synced");
    let bytes = net.nodes[0].engine.stats().bytes_sent + net.nodes[1].engine.stats().bytes_sent;
    (secs, bytes, net.nodes[1].committed)
}

fn main() {
    let secret = WorkspaceSecret([7; 32]);
    let all = bundles(&secret, 100_000);
    let raw: usize = all.iter().map(|b| b.bytes().len()).sum();
    println!(
        "100,000 bundles, {:.2} MiB as stored",
        raw as f64 / 1048576.0
    );

    // The batch codec alone: 256-bundle batches, column and row layouts.
    let mut codec = troupe_protocol::sync::message::BatchCodec::default();
    for (name, columns) in [("columns", true), ("rows", false)] {
        let t = Instant::now();
        let unsigned: Vec<Bundle> = all.iter().map(Bundle::without_signature).collect();
        let mut packed = Vec::new();
        for chunk in unsigned.chunks(256) {
            let items = chunk.iter().map(|b| (false, b.bytes()));
            packed.push(if columns {
                codec.encode(items)
            } else {
                codec.encode_rows(items)
            });
        }
        let enc = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for p in &packed {
            codec.decode(p).expect("decodes");
        }
        let dec = t.elapsed().as_secs_f64();
        let size: usize = packed.iter().map(Vec::len).sum();
        println!(
            "batch codec ({name}): encode {enc:.3} s, decode {dec:.3} s, {:.2} MiB (no signatures, prev_hash kept)",
            size as f64 / 1048576.0
        );
    }

    // zstd levels for the column layout: compression time against bytes.
    let unsigned: Vec<Bundle> = all.iter().map(Bundle::without_signature).collect();
    let t = Instant::now();
    let plain: usize = unsigned
        .chunks(256)
        .map(|chunk| {
            let items: Vec<(bool, &[u8])> = chunk.iter().map(|b| (false, b.bytes())).collect();
            troupe_protocol::sync::message::column_layout(&items).len()
        })
        .sum();
    println!(
        "column layout alone: {:.3} s, {:.2} MiB before compression",
        t.elapsed().as_secs_f64(),
        plain as f64 / 1048576.0
    );
    for level in [-5, -1, 1, 2, 3] {
        let mut codec = troupe_protocol::sync::message::BatchCodec::with_level(level);
        let t = Instant::now();
        let size: usize = unsigned
            .chunks(256)
            .map(|chunk| codec.encode(chunk.iter().map(|b| (false, b.bytes()))).len())
            .sum();
        println!(
            "columns at zstd level {level}: encode {:.3} s, {:.2} MiB",
            t.elapsed().as_secs_f64(),
            size as f64 / 1048576.0
        );
    }

    let (s, bytes, n) = sync(&secret, &all, 0);
    println!(
        "full sync:    {n} bundles in {:.3} s, {:.2} MiB on the wire (targets 0.3 s, 6 MiB)",
        s,
        bytes as f64 / 1048576.0
    );
    let (s, bytes, n) = sync(&secret, &all[..11_000], 10_000);
    println!(
        "catch-up:     {n} bundles in {:.2} ms, {} bytes (target 10 ms)",
        s * 1e3,
        bytes
    );
    let (s, bytes, n) = sync(&secret, &all, all.len());
    println!(
        "no-op resync: {n} bundles in {:.2} ms, {bytes} bytes both ways (target 1 KiB)",
        s * 1e3
    );
}
