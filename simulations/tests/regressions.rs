//! Seeds that once failed, run with the options they fail under today's
//! defaults (and twice, for determinism). Each names what it found.
//!
//! - 0x1, 0x47 (and 11 more in the first sweep): in-flight corruption
//!   flipped bytes in control frames (a `Want`'s author id); the simulator
//!   now models the transport's integrity check (a damaged control frame
//!   breaks the connection) and corrupts only bundle data, which the engine
//!   must and does reject. The engine finding behind it is in
//!   `no_bounce_liveness` below.
//! - 0x2, 0x7d, 0x91, 0xbd, 0xc0: bit rot at rest followed by a crash left a
//!   file redb's crash repair refuses ("all roots are corrupted"): salvage's
//!   job, which works on files; the simulator no longer crashes a node whose
//!   disk it rotted.
//! - 0xce, 0xaf, 0xd5, 0xf8, 0xb9: with live sessions kept across healing,
//!   a bundle refused once from a peer (corrupt copy) was never asked of that
//!   peer again in the session, and an unanswered want was never released;
//!   the receiver reported `UpToDate` while lacking it. Fixed in the engine
//!   (want deadlines, retry of refused slots); these seeds now converge both
//!   with and without bouncing connections at healing.
//! - 0xb6: with those retries, an unsigned bundle whose signed successor was
//!   already held was verified by the engine (the successor vouched for it in
//!   the batch) but dropped before commit, so the store saw it alone and
//!   quarantined it, again and again. Now the engine sends the vouching
//!   successor along and the store verifies held copies with the candidates.
//!
//! These seeds were found before runs had late joins; they run with the
//! options they were found under (no late joins), and late joins are
//! covered by the sweep and by `late_joins_without_bouncing` below.

use troupe_simulations::{Options, Scale, run_twice};

/// The options a seed expands to, as they were when these seeds were found.
fn original(s: u64) -> Options {
    let mut opts = Options::from_seed(s, Scale::Small);
    opts.late_joins.clear();
    opts
}

fn seed(s: u64) {
    let opts = original(s);
    if let Err(e) = run_twice(&opts) {
        panic!("seed {s:#x}: {e}");
    }
}

#[test]
fn seed_0x1() {
    seed(0x1);
}

#[test]
fn seed_0x2() {
    seed(0x2);
}

#[test]
fn seed_0x47() {
    seed(0x47);
}

#[test]
fn seed_0x7d() {
    seed(0x7d);
}

#[test]
fn seed_0x91() {
    seed(0x91);
}

#[test]
fn seed_0xaf() {
    seed(0xaf);
}

#[test]
fn seed_0xb9() {
    seed(0xb9);
}

#[test]
fn seed_0xbd() {
    seed(0xbd);
}

#[test]
fn seed_0xc0() {
    seed(0xc0);
}

#[test]
fn seed_0xb6() {
    seed(0xb6);
}

#[test]
fn seed_0xce() {
    seed(0xce);
}

#[test]
fn seed_0xd5() {
    seed(0xd5);
}

#[test]
fn seed_0xf8() {
    seed(0xf8);
}

/// The engine issue, fixed: without bouncing connections at healing, these
/// seeds stalled (a refused or unanswered slot was never asked again in the
/// session). The engine now releases wants a peer does not serve within
/// `WANT_TIMEOUT` and asks again for refused slots after `RETRY_REFUSED`.
#[test]
fn no_bounce_liveness() {
    for s in [0xce, 0xaf, 0xd5, 0xf8, 0xb9, 0xb6] {
        let mut opts = original(s);
        opts.bounce_on_heal = false;
        if let Err(e) = run_twice(&opts) {
            panic!("seed {s:#x} without bouncing: {e}");
        }
    }
}

/// Workspaces joined on running nodes whose peers are already connected
/// (membership proved mid-session), with live sessions kept across healing,
/// so only the mid-session proofs can bring the joiners up to date.
#[test]
fn late_joins_without_bouncing() {
    let mut ran = 0;
    for s in 0..40u64 {
        let mut opts = Options::from_seed(s, Scale::Small);
        if opts.late_joins.is_empty() {
            continue;
        }
        opts.bounce_on_heal = false;
        if let Err(e) = run_twice(&opts) {
            panic!("seed {s:#x} with late joins, without bouncing: {e}");
        }
        ran += 1;
    }
    assert!(ran >= 5, "only {ran} of 40 seeds have late joins");
}
