//! Many seeds in a row: each run isolated (a violation is caught and
//! reported with its seed and the command that replays it, then replayed
//! once to show it reproduces), within a budget of seeds or of wall-clock
//! time, and a report of what was covered.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::trace::Faults;
use super::{Memory, Options, RunReport, run};

/// The command that replays `seed` with `options`.
pub fn replay_command(seed: u64, options: &Options) -> String {
    match options.to_arg() {
        arg if arg.is_empty() => format!("cargo xtask sim --seed {seed}"),
        arg => format!("cargo xtask sim --seed {seed} --options {arg}"),
    }
}

/// A failed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its seed.
    pub seed: u64,
    /// The panic message (for a found bug: "invariant violated: ...").
    pub message: String,
    /// The command that replays it.
    pub replay: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {} failed: {}\n  replay: {}", self.seed, self.message, self.replay)
    }
}

/// Runs one seed, catching a failure.
pub fn check(seed: u64, options: &Options, memory: &mut Memory) -> Result<RunReport, Failure> {
    catch_unwind(AssertUnwindSafe(|| run(seed, options, memory))).map_err(|payload| {
        let message = match payload.downcast::<String>() {
            Ok(s) => *s,
            Err(payload) => payload.downcast::<&str>().map_or_else(|_| "a panic".to_string(), |s| s.to_string()),
        };
        Failure { seed, message, replay: replay_command(seed, options) }
    })
}

/// Runs `seed` twice and compares the trace digests.
pub fn determinism(seed: u64, options: &Options, memory: &mut Memory) -> Result<RunReport, Failure> {
    let first = check(seed, options, memory)?;
    let second = check(seed, options, memory)?;
    if first != second {
        let message = format!("the seed does not replay: {first:?} then {second:?}");
        return Err(Failure { seed, message, replay: replay_command(seed, options) });
    }
    Ok(first)
}

/// Which seeds to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The first seed (the next ones follow it).
    pub start: u64,
    /// How many seeds at most.
    pub seeds: Option<u64>,
    /// How long at most (checked between runs).
    pub time_limit: Option<Duration>,
    /// What every run is given.
    pub options: Options,
}

/// What a sweep covered.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The first seed.
    pub start: u64,
    /// Runs made (the first seed runs twice: the determinism check).
    pub runs: u64,
    /// Distinct seeds run.
    pub seeds: u64,
    /// Calls answered and checked, over all runs.
    pub ops: u64,
    /// Runs that ended with a shutdown.
    pub shutdowns: u64,
    /// Virtual time simulated, in ns.
    pub sim_ns: u64,
    /// Passes of the simulation loop.
    pub passes: u64,
    /// Wall-clock time taken.
    pub wall: Duration,
    /// Faults injected, over all runs.
    pub faults: Faults,
    /// The first failure, if any.
    pub failure: Option<Failure>,
    /// What replaying the failing seed gave (`None`: it passed).
    pub replayed: Option<String>,
}

impl Summary {
    fn add(&mut self, report: &RunReport, runs: u64) {
        self.runs += runs;
        self.seeds += 1;
        self.ops += report.ops * runs;
        self.shutdowns += u64::from(report.shutdown);
        self.sim_ns += report.sim_ns * runs;
        self.passes += report.passes * runs;
        self.faults.add(&report.faults);
    }

    /// Simulated operations per second of wall-clock time.
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Whether the failure replayed to the same message.
    pub fn replays(&self) -> bool {
        self.failure.as_ref().is_some_and(|f| self.replayed.as_deref() == Some(f.message.as_str()))
    }
}

/// Runs the seeds of `plan` until its budget is spent or one fails.
pub fn sweep(plan: &Plan) -> Summary {
    let mut memory = Memory::new();
    let started = Instant::now();
    let mut summary = Summary { start: plan.start, ..Summary::default() };
    for i in 0u64.. {
        let out_of_seeds = plan.seeds.is_some_and(|n| i >= n);
        if out_of_seeds || plan.time_limit.is_some_and(|t| started.elapsed() >= t) {
            break;
        }
        let seed = plan.start.wrapping_add(i);
        let (result, runs) = if i == 0 {
            (determinism(seed, &plan.options, &mut memory), 2)
        } else {
            (check(seed, &plan.options, &mut memory), 1)
        };
        match result {
            Ok(report) => summary.add(&report, runs),
            Err(failure) => {
                summary.replayed = check(seed, &plan.options, &mut memory).err().map(|f| f.message);
                summary.failure = Some(failure);
                break;
            }
        }
    }
    summary.wall = started.elapsed();
    summary
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.start.wrapping_add(self.seeds.saturating_sub(1));
        writeln!(
            f,
            "simulation: {} seeds ({}..={last}), {} runs with the determinism check",
            self.seeds, self.start, self.runs
        )?;
        writeln!(
            f,
            "  {} simulated fs operations in {:.1} s of wall time: {:.0} ops/s; {:.1} s simulated in {} passes; {} runs \
             ended by shutdown",
            self.ops,
            self.wall.as_secs_f64(),
            self.ops_per_second(),
            self.sim_ns as f64 / 1e9,
            self.passes,
            self.shutdowns
        )?;
        writeln!(f, "faults injected:")?;
        write!(f, "{}", self.faults)?;
        if let Some(failure) = &self.failure {
            writeln!(f, "FAILED: {failure}")?;
            match &self.replayed {
                Some(m) if *m == failure.message => writeln!(f, "  the replay fails the same way")?,
                Some(m) => writeln!(f, "  the replay fails differently: {m}")?,
                None => writeln!(f, "  the replay passes: the failure does not reproduce")?,
            }
        }
        Ok(())
    }
}
