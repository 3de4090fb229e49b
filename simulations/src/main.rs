//! `troupe-simulations`: run one seed (`--seed N`) or sweep many
//! (`--seeds N`, from `--from S`), printing each seed's options, the figures,
//! and on failure the one command that reproduces it. `TROUPE_SIM_SEED` and
//! `TROUPE_SIM_SEEDS` work as the flags. `--nodes N` runs the large scale.

use std::process::ExitCode;

use troupe_simulations::{Options, Scale, repro_command, run_twice};

struct Args {
    seed: Option<u64>,
    seeds: Option<u64>,
    from: u64,
    nodes: Option<usize>,
    quiet: bool,
    no_bounce: bool,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("not a number: {s}"))
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        seed: std::env::var("TROUPE_SIM_SEED")
            .ok()
            .map(|s| parse_u64(&s))
            .transpose()?,
        seeds: std::env::var("TROUPE_SIM_SEEDS")
            .ok()
            .map(|s| parse_u64(&s))
            .transpose()?,
        from: 0,
        nodes: None,
        quiet: false,
        no_bounce: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seed" => a.seed = Some(parse_u64(&val()?)?),
            "--seeds" => a.seeds = Some(parse_u64(&val()?)?),
            "--from" => a.from = parse_u64(&val()?)?,
            "--nodes" => a.nodes = Some(parse_u64(&val()?)? as usize),
            "--quiet" => a.quiet = true,
            "--no-bounce" => a.no_bounce = true,
            other => {
                return Err(format!(
                    "unknown argument {other}; use --seed N | --seeds N [--from S] [--nodes N] [--quiet] [--no-bounce]"
                ));
            }
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let scale = a.nodes.map_or(Scale::Small, Scale::Large);
    let seeds: Vec<u64> = match (a.seed, a.seeds) {
        (Some(s), _) => vec![s],
        (None, Some(n)) => (a.from..a.from + n).collect(),
        (None, None) => vec![0],
    };
    let start = std::time::Instant::now();
    let (mut node_ms, mut failed) = (0u128, 0u64);
    for &seed in &seeds {
        let mut opts = Options::from_seed(seed, scale);
        opts.bounce_on_heal = !a.no_bounce;
        if !a.quiet || seeds.len() == 1 {
            println!("{opts}");
        }
        match run_twice(&opts) {
            Ok(o) => {
                node_ms += o.node_ms;
                if !a.quiet || seeds.len() == 1 {
                    println!(
                        "ok  seed {seed:#x}: {} events, {} authored (mean {:.0} B), {} delivered, converged {} ms after healing, {} crashes, {} rots, {} corrupted frames, {} breaks, {} quarantined, {} blamed; bytes in per delivered bundle {:.0} ({:.2}x bundle; bundle-carrying frames alone {:.2}x); trace {}",
                        o.events,
                        o.authored,
                        o.mean_bundle_bytes,
                        o.delivered,
                        o.converge_ms,
                        o.crashes,
                        o.rots,
                        o.corrupted,
                        o.breaks,
                        o.quarantined,
                        o.blamed,
                        o.bytes_in as f64 / o.delivered.max(1) as f64,
                        o.bytes_in as f64
                            / o.delivered.max(1) as f64
                            / o.mean_bundle_bytes.max(1.0),
                        o.data_bytes_in as f64
                            / o.delivered.max(1) as f64
                            / o.mean_bundle_bytes.max(1.0),
                        &o.trace_hash[..16]
                    );
                }
            }
            Err(e) => {
                failed += 1;
                let extra = if a.no_bounce { " --no-bounce" } else { "" };
                println!(
                    "FAIL seed {seed:#x}: {e}\nreproduce: {}{extra}",
                    repro_command(seed, scale)
                );
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} seeds ({} runs with the determinism check), {failed} failed, {:.1} s wall, {:.0} seeds/min, {:.2} simulated node-hours",
        seeds.len(),
        2 * seeds.len(),
        secs,
        seeds.len() as f64 / secs * 60.0,
        node_ms as f64 / 3_600_000.0
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
