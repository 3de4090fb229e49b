//! The CI sweep: 1,000 small seeds (each run twice, trace hashes compared)
//! must keep every safety property at every step and converge after
//! healing. Split into four tests so the test harness uses both cores.

use troupe_simulations::{Options, Scale, repro_command, run_twice};

fn sweep(from: u64, n: u64) {
    let mut failed = Vec::new();
    for seed in from..from + n {
        let opts = Options::from_seed(seed, Scale::Small);
        if let Err(e) = run_twice(&opts) {
            failed.push(format!(
                "seed {seed:#x}: {e}\n  reproduce: {}",
                repro_command(seed, Scale::Small)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn seeds_0_to_249() {
    sweep(0, 250);
}

#[test]
fn seeds_250_to_499() {
    sweep(250, 250);
}

#[test]
fn seeds_500_to_749() {
    sweep(500, 250);
}

#[test]
fn seeds_750_to_999() {
    sweep(750, 250);
}
