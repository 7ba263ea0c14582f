//! The deterministic simulation of agent and host together: a few seeds,
//! the determinism check, the fault kinds reached (hostile clients
//! included), every planted bug caught by a normal sweep and replayed, and (ignored, driven by `cargo xtask sim` through `SIM_*`
//! variables) the long sweep.

use std::time::Duration;

use tests::sim::{Bug, Faults, Memory, Options, Plan, Summary, check, determinism, replay_command, sweep};

/// Operations per run in the quick tests (debug builds are slow).
const QUICK_OPS: u64 = 300;

fn quick(options: Options) -> Options {
    Options { ops: Some(QUICK_OPS), ..options }
}

/// Runs `seeds` and returns their summed fault counters; panics on a failure.
fn run_seeds(seeds: std::ops::Range<u64>, options: Options) -> Faults {
    let mut memory = Memory::new();
    let mut faults = Faults::default();
    for seed in seeds {
        match check(seed, &options, &mut memory) {
            Ok(report) => faults.add(&report.faults),
            Err(failure) => panic!("{failure}"),
        }
    }
    faults
}

#[test]
fn a_few_seeds_pass() {
    run_seeds(0..12, quick(Options::default()));
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    let mut memory = Memory::new();
    for seed in [7, 1_000_003] {
        let report = determinism(seed, &quick(Options::default()), &mut memory).unwrap_or_else(|f| panic!("{f}"));
        assert!(report.trace_records > 1_000 && report.ops > 0, "{report:?}");
    }
    let other = check(8, &quick(Options::default()), &mut memory).unwrap_or_else(|f| panic!("{f}"));
    let first = check(7, &quick(Options::default()), &mut memory).unwrap_or_else(|f| panic!("{f}"));
    assert_ne!(first.trace, other.trace, "two seeds, two traces");
}

#[test]
fn every_fault_kind_is_reached() {
    let faults = run_seeds(100..140, quick(Options { faults: Some(true), ..Options::default() }));
    // Reached by the tests below, which aim at them.
    let elsewhere = [
        "writes refused: no space",
        "agent receive buffer full",
        "slow clients dropped",
        "clients cut off at the relay's total bound",
        "slow readers paused in the guest",
    ];
    for (name, count) in faults.counters() {
        if !elsewhere.contains(&name) {
            assert!(count > 0, "no {name} in 40 runs with faults:\n{faults}");
        }
    }
}

#[test]
fn a_full_ramfs_refuses_writes_and_loses_nothing() {
    // Seeds until writes ran out of space in a few runs (each run checks
    // that nothing acknowledged was lost); a tight arena does it in about
    // one run of three.
    let options = quick(Options { tight: Some(true), big_files: Some(false), ..Options::default() });
    let mut faults = Faults::default();
    for seed in 505..605 {
        faults.add(&run_seeds(seed..seed + 1, options));
        if faults.no_space >= 3 {
            return;
        }
    }
    panic!("writes ran out of space fewer than 3 times in 100 tight runs:\n{faults}");
}

#[test]
fn backpressure_reaches_the_agent_and_slows_a_reader_that_falls_behind() {
    let faults = run_seeds(400..406, Options { ops: Some(1_000), backpressure: Some(true), ..Options::default() });
    assert!(faults.rx_full > 0, "{faults}");
    assert!(faults.relay_pauses > 0, "{faults}");
}

#[test]
fn a_shutdown_mid_traffic_ends_every_run_cleanly() {
    let faults = run_seeds(200..206, quick(Options { shutdown: Some(true), ..Options::default() }));
    assert_eq!(faults.shutdowns, 6);
}

#[test]
fn big_files_cross_the_chunk_boundaries() {
    run_seeds(300..302, Options { ops: Some(150), big_files: Some(true), faults: Some(false), ..Options::default() });
}

/// Seeds of the sweep that must catch each planted bug: default options
/// (faults and hostile clients drawn from the seed), [`QUICK_OPS`] each.
const CATCH_SEEDS: u64 = 60;

/// Sweeps with `bug` planted, as CI sweeps (default options), until a seed
/// fails; checks the failure names one of `symptoms`, prints a command that
/// replays it, and replays to itself (and the seed passes without the bug).
fn caught(bug: Bug, symptoms: &[&str], arg: &str) {
    let options = quick(Options { bug, ..Options::default() });
    let plan = Plan { start: 0, seeds: Some(CATCH_SEEDS), time_limit: None, options };
    let summary = sweep(&plan);
    let failure = summary.failure.clone().unwrap_or_else(|| panic!("the sweep misses {bug:?}:\n{summary}"));
    assert!(symptoms.iter().any(|s| failure.message.contains(s)), "{failure}");
    assert!(summary.replays(), "{summary}");
    assert_eq!(failure.replay, replay_command(failure.seed, &options));
    assert!(failure.replay.ends_with(&format!("--options {arg},ops={QUICK_OPS}")), "{failure}");
    assert_eq!(Options::parse(&options.to_arg()).map(|o| o.to_arg()), Ok(options.to_arg()));
    let mut memory = Memory::new();
    assert_eq!(check(failure.seed, &options, &mut memory).unwrap_err(), failure);
    let honest = Options { bug: Bug::None, ..options };
    assert!(check(failure.seed, &honest, &mut memory).is_ok(), "seed {} fails without the bug", failure.seed);
    println!("{bug:?} caught by seed {} after {} seeds: {}", failure.seed, summary.seeds, failure.message);
}

#[test]
fn a_planted_bug_is_caught_and_its_seed_replays() {
    caught(Bug::DropDisconnectNotice, &["survived the disconnect"], "bug=drop-disconnect-notice");
}

#[test]
fn corrupted_read_data_is_caught() {
    // A plain read sees other bytes; a probe sees neither the old nor the new file.
    let symptoms = ["data differs from the model", "neither as before nor as written"];
    caught(Bug::FlipGuestData, &symptoms, "bug=flip-guest-data");
}

/// What a frame of a slot's previous occupant does to the next one: an id
/// it did not open, or an answer it was not owed on one it did.
const LEAKED_FRAME: [&str; 4] = ["an id it did not open", "got core.fs.data", "after its terminal frame", "differs"];

#[test]
fn reusing_a_slot_before_the_guest_drained_it_is_caught() {
    // Or the next occupant's session is in the range when the agent has
    // just handled the previous one's disconnect notice.
    let symptoms = [LEAKED_FRAME.as_slice(), &["survived the disconnect"]].concat();
    caught(Bug::ReuseBeforeDrain, &symptoms, "bug=reuse-before-drain");
}

#[test]
fn a_relay_that_never_cuts_a_client_off_is_caught() {
    caught(Bug::NoEviction, &["over its bound"], "bug=no-eviction");
}

#[test]
fn host_only_messages_forged_by_a_client_are_caught() {
    // The forger's own answer is missing, or everyone's clock, sessions or
    // answers show the forged message took effect (a write whose session
    // the forged disconnect ended gets "unknown write session").
    let symptoms =
        ["was owed SessionError", "modified", "never got a terminal frame", "over the bound", "unknown write session"];
    caught(Bug::HostMessagesAnyId, &symptoms, "bug=host-messages-any-id");
}

#[test]
fn a_client_holding_more_than_its_share_of_sessions_is_caught() {
    caught(Bug::NoSessionQuota, &["was owed QuotaRefusal"], "bug=no-session-quota");
}

#[test]
fn a_relay_that_waits_for_a_stalled_client_is_caught() {
    // Answers, honest or owed to a hostile client, come late.
    caught(Bug::RelayWaits, &["over the bound", "got no answer within"], "bug=relay-waits");
}

#[test]
fn a_resync_that_does_not_wait_for_quiet_is_caught() {
    caught(Bug::ResyncWithoutQuiet, &["the agent lost the stream"], "bug=resync-without-quiet");
}

#[test]
fn handles_that_survive_their_clients_disconnect_are_caught() {
    caught(
        Bug::HandlesSurviveDisconnect,
        &["owed Some(BadHandle", "survived the disconnect"],
        "bug=handles-survive-disconnect",
    );
}

/// Reads a `u64` from the environment.
fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// The sweep's figures as JSON, for `cargo xtask bench`.
fn report_json(summary: &Summary) -> serde_json::Value {
    let faults: serde_json::Map<String, serde_json::Value> =
        summary.faults.counters().iter().map(|(name, count)| (name.to_string(), (*count).into())).collect();
    serde_json::json!({
        "summary": summary.to_string(),
        "start": summary.start,
        "seeds": summary.seeds,
        "runs": summary.runs,
        "ops": summary.ops,
        "wall_seconds": summary.wall.as_secs_f64(),
        "ops_per_second": summary.ops_per_second(),
        "simulated_seconds": summary.sim_ns as f64 / 1e9,
        "faults": faults,
        "failure": summary.failure.as_ref().map(|f| f.to_string()),
    })
}

/// The long sweep: `SIM_SEED` replays one seed; else `SIM_START` (default
/// 0) and `SIM_SEEDS` and/or `SIM_SECONDS` bound a sweep. `SIM_OPTIONS`
/// narrows the runs (see `Options::parse`). With `SIM_REPORT`, the figures
/// are also written there as JSON.
#[test]
#[ignore = "long; run by `cargo xtask sim` and `cargo xtask test`"]
fn sweep_from_env() {
    let options = Options::parse(&std::env::var("SIM_OPTIONS").unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    let plan = match env("SIM_SEED") {
        Some(seed) => Plan { start: seed, seeds: Some(1), time_limit: None, options },
        None => Plan {
            start: env("SIM_START").unwrap_or(0),
            seeds: env("SIM_SEEDS"),
            time_limit: env("SIM_SECONDS").map(Duration::from_secs),
            options,
        },
    };
    assert!(plan.seeds.is_some() || plan.time_limit.is_some(), "set SIM_SEED, SIM_SEEDS or SIM_SECONDS");
    let summary = sweep(&plan);
    println!("{summary}");
    if let Ok(path) = std::env::var("SIM_REPORT") {
        let path = std::path::Path::new(&path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        let json = serde_json::to_string_pretty(&report_json(&summary)).expect("JSON");
        std::fs::write(path, json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    assert!(summary.failure.is_none(), "the simulation found a failure (see above)");
}
