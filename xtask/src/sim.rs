//! `cargo xtask sim`: the deterministic simulation of agent and host
//! (`tests/src/sim/`), built optimized with debug assertions and overflow
//! checks on, and run through the ignored `sweep_from_env` test of
//! `tests/tests/sim.rs`, which reads its plan from `SIM_*` variables (and
//! writes a JSON report where `SIM_REPORT` says, for `cargo xtask bench`).

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::{Result, cargo, run};

/// The profile the simulation runs in: release, plus the checks the agent's
/// own `debug_assert!`s and arithmetic rely on, with thin LTO so it builds
/// quickly. Defined on the command line, so the manifest stays as it is.
/// `cargo xtask bench` builds its system benchmark in it too, so the tests
/// crate is compiled optimised once for both.
const PROFILE: &str = "sim";
const PROFILE_CONFIG: [&str; 4] = [
    "profile.sim.inherits=\"release\"",
    "profile.sim.lto=\"thin\"",
    "profile.sim.debug-assertions=true",
    "profile.sim.overflow-checks=true",
];

/// Seconds of the sweep `cargo xtask test` runs: about two minutes.
const TEST_SWEEP_SECONDS: u64 = 115;

/// Seconds of the sweep `cargo xtask bench` measures the simulator with.
const BENCH_SWEEP_SECONDS: u64 = 20;

/// `cargo xtask sim --seed S | [--seeds N] [--start S] [--minutes M]
/// [--seconds S]`, and `--options key=value,...` to narrow the runs (a
/// failure prints the options its replay needs).
pub fn command(args: &[&str]) -> Result {
    let mut env: Vec<(&str, String)> = Vec::new();
    let mut start = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if *arg == "--options" {
            env.push(("SIM_OPTIONS", args.next().ok_or("--options takes key=value,...")?.to_string()));
            continue;
        }
        let mut number = |what: &str| -> Result<u64> {
            args.next().and_then(|v| v.parse().ok()).ok_or(format!("{arg} takes {what}"))
        };
        match *arg {
            "--seed" => env.push(("SIM_SEED", number("a seed")?.to_string())),
            "--start" => start = Some(number("a seed")?),
            "--seeds" => env.push(("SIM_SEEDS", number("a number of seeds")?.to_string())),
            "--minutes" => env.push(("SIM_SECONDS", (number("a number of minutes")? * 60).to_string())),
            "--seconds" => env.push(("SIM_SECONDS", number("a number of seconds")?.to_string())),
            other => return Err(format!("unknown sim option {other}")),
        }
    }
    if !env.iter().any(|(k, _)| matches!(*k, "SIM_SEED" | "SIM_SEEDS" | "SIM_SECONDS")) {
        return Err("say what to run: --seed S, --seeds N, --minutes M or --seconds S".into());
    }
    if !env.iter().any(|(k, _)| *k == "SIM_SEED") {
        env.push(("SIM_START", start.unwrap_or_else(start_from_clock).to_string()));
    }
    sweep(&env)
}

/// The sweep of `cargo xtask test`: about two minutes from a start seed
/// that differs every time (and is printed, like any failing seed).
pub fn sweep_for_test() -> Result {
    let start = start_from_clock();
    sweep(&[("SIM_START", start.to_string()), ("SIM_SECONDS", TEST_SWEEP_SECONDS.to_string())])
}

/// The simulator's speed for `cargo xtask bench`: a short sweep, as the
/// JSON report it writes (`summary` holds the text of the report).
pub fn speed_for_bench() -> Result<Value> {
    let report = crate::bench::out_dir().join("sim.json");
    let start = start_from_clock();
    sweep(&[
        ("SIM_START", start.to_string()),
        ("SIM_SECONDS", BENCH_SWEEP_SECONDS.to_string()),
        ("SIM_REPORT", report.to_string_lossy().into_owned()),
    ])?;
    let text = std::fs::read_to_string(&report).map_err(|e| format!("{}: {e}", report.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", report.display()))
}

/// A start seed from the wall clock, printed so the sweep can be repeated.
fn start_from_clock() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    // Keep seeds short enough to type: 12 decimal digits.
    let start = nanos.wrapping_mul(0x9e37_79b9_7f4a_7c15) % 1_000_000_000_000;
    eprintln!("simulation start seed: {start}");
    start
}

/// `cargo SUBCOMMAND --profile sim ARGS...`, with the profile defined.
pub fn cargo_in_profile(subcommand: &str, args: &[&str]) -> Command {
    let mut cmd = cargo(&[]);
    for config in PROFILE_CONFIG {
        cmd.args(["--config", config]);
    }
    cmd.args([subcommand, "--profile", PROFILE]).args(args);
    cmd
}

/// Builds and runs the sweep test with `env`; its output says what ran.
fn sweep(env: &[(&str, String)]) -> Result {
    let mut cmd = cargo_in_profile("test", &["-p", "tests", "--test", "sim", "--", "--ignored", "--exact"]);
    cmd.args(["sweep_from_env", "--nocapture"]);
    for (key, value) in env {
        eprintln!("{key}={value}");
        cmd.env(key, value);
    }
    run(cmd)
}
