//! Prints how fast bundles are built and verified: bundles encoded + hashed +
//! signed per second, and the time to verify a 100,000-bundle chain (1M field
//! ops, 10 per bundle) with one signature per run versus one per bundle.
//!
//! Run: `cargo bench -p troupe-protocol --features testing --bench verify`

#![allow(clippy::disallowed_methods)] // a benchmark is a driver: it reads the clock

use std::time::Instant;

use troupe_protocol::bundle::{Bundle, BundleKind};
use troupe_protocol::crypto::ActorKey;
use troupe_protocol::draft::{AuthorTip, Draft};
use troupe_protocol::hlc::HlcClock;
use troupe_protocol::path::FieldPath;
use troupe_protocol::testing::workload::{FIELDS, contact_value};
use troupe_protocol::verify::verify_bundles;
use troupe_protocol::workspace::WorkspaceSecret;

const BUNDLES: usize = 100_000;

fn main() {
    let ws = WorkspaceSecret([7; 32]).workspace_id();
    let key = ActorKey::from_secret_bytes([9; 32]);
    let mut clock = HlcClock::default();
    let mut tip = AuthorTip::default();
    let mut rng = 0x1234_5678_9abc_def0u64;

    let drafts: Vec<Draft> = (0..BUNDLES)
        .map(|i| {
            let mut d = Draft::new(ws, BundleKind::UserEdit, "Add contact");
            for f in FIELDS {
                let path =
                    FieldPath::new("contacts.person", &format!("p{i}"), f).expect("valid path");
                d.set(path, contact_value(&mut rng, f, i), vec![]);
            }
            d
        })
        .collect();

    let t = Instant::now();
    let mut bundles = Vec::with_capacity(BUNDLES);
    for (i, d) in drafts.into_iter().enumerate() {
        let b = d
            .sign(&key, &tip, clock.tick(1_700_000_000_000 + i as u64))
            .expect("valid");
        tip = AuthorTip::after(&b);
        bundles.push(b);
    }
    let sign_s = t.elapsed().as_secs_f64();
    let bytes: Vec<Vec<u8>> = bundles.iter().map(|b| b.bytes().to_vec()).collect();
    let total_bytes: usize = bytes.iter().map(Vec::len).sum();

    // As a receiver does: batches of 256, decoded, verified, then dropped.
    let verify_batches = |bytes: &[Vec<u8>], per_run: bool| -> (f64, f64) {
        let mut decode_s = 0.0;
        let mut check_s = 0.0;
        let mut prev = None;
        for batch in bytes.chunks(256) {
            let t = Instant::now();
            let decoded: Vec<Bundle> = batch
                .iter()
                .map(|b| Bundle::decode(b.clone()).expect("decodes"))
                .collect();
            decode_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            if per_run {
                let res = verify_bundles(&ws, &decoded, |_, _| prev);
                assert!(res.iter().all(|r| r.is_ok()));
            } else {
                for b in &decoded {
                    b.verify_alone(&ws, prev.as_ref()).expect("verifies");
                    prev = Some(b.hash());
                }
            }
            prev = decoded.last().map(Bundle::hash);
            check_s += t.elapsed().as_secs_f64();
        }
        (decode_s, check_s)
    };
    let (decode_s, run_s) = verify_batches(&bytes, true);
    let (_, each_s) = verify_batches(&bytes, false);
    // What goes on the wire: interior signatures dropped, each batch's tail signed.
    let wire: Vec<Vec<u8>> = bundles
        .chunks(256)
        .flat_map(|c| {
            let n = c.len();
            c.iter().enumerate().map(move |(i, b)| {
                if i + 1 == n {
                    b.bytes().to_vec()
                } else {
                    b.without_signature().into_bytes()
                }
            })
        })
        .collect();
    let wire_bytes: usize = wire.iter().map(Vec::len).sum();
    let (wire_decode_s, wire_run_s) = verify_batches(&wire, true);

    println!(
        "troupe-protocol verify benchmark: {BUNDLES} bundles x 10 field ops = {} ops, {:.1} MiB encoded (avg {} B/bundle)",
        BUNDLES * 10,
        total_bytes as f64 / 1048576.0,
        total_bytes / BUNDLES
    );
    println!("{:<48} {:>12}", "figure", "value");
    println!(
        "{:<48} {:>12.0}",
        "bundles encoded+hashed+signed per second",
        BUNDLES as f64 / sign_s
    );
    println!(
        "{:<48} {:>10.3} s",
        "decode + blake3, batches of 256", decode_s
    );
    println!(
        "{:<48} {:>10.3} s",
        "chain links + one signature per run", run_s
    );
    println!(
        "{:<48} {:>10.3} s",
        "verify 1M-op chain from bytes (run sigs)",
        decode_s + run_s
    );
    println!("{:<48} {:>10.3} s", "signatures one by one", each_s);
    println!(
        "{:<48} {:>10.3} s",
        "verify 1M-op chain from bytes, one by one",
        decode_s + each_s
    );
    println!(
        "{:<48} {:>8.1} MiB",
        "encoded, interior signatures dropped",
        wire_bytes as f64 / 1048576.0
    );
    println!(
        "{:<48} {:>10.3} s",
        "verify that (decode + runs)",
        wire_decode_s + wire_run_s
    );
    println!(
        "{{\"bundles\":{BUNDLES},\"ops\":{},\"encoded_bytes\":{total_bytes},\"wire_bytes_unsigned_interior\":{wire_bytes},\"sign_per_s\":{:.0},\"decode_s\":{decode_s:.4},\"verify_runs_s\":{run_s:.4},\"verify_from_bytes_runs_s\":{:.4},\"verify_each_s\":{each_s:.4}}}",
        BUNDLES * 10,
        BUNDLES as f64 / sign_s,
        decode_s + run_s
    );
}
