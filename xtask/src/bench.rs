//! `cargo xtask bench`: every benchmark, each against its baseline in the
//! same run, merged into one report: `report.md` and `report.json` in
//! `target/bench/` (under `CARGO_TARGET_DIR` when set).
//!
//! - codec: `wire` against serde + ciborium (`cargo bench -p wire`);
//! - the system: boot, throughput, latency, footprint, idle, density (`sysbench`);
//! - the simulator's speed (`cargo xtask sim`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::{Result, cargo, run, target_dir};

/// The codec target: wire encodes and decodes a small message at least
/// [`CODEC_SPEEDUP_TARGET`] times as fast as serde + ciborium. `wire.json`
/// carries no message sizes, so the small messages are named here as the
/// codec bench (`wire/benches/codec.rs`) names them; the large ones (the
/// 50-entry listing, the 3 MiB chunk) have the decode-cost ratio instead.
const CODEC_SMALL_MESSAGES: [&str; 3] = ["Stat request", "Ready", "FsData 1 KiB"];
/// The speed-up the codec target asks for on small messages.
const CODEC_SPEEDUP_TARGET: f64 = 10.0;

/// Where the benchmark results go.
pub fn out_dir() -> PathBuf {
    target_dir().join("bench")
}

/// `cargo xtask bench [wire]`.
pub fn command(args: &[&str]) -> Result {
    match args {
        ["wire"] => wire(),
        [] => all(),
        other => Err(format!("unknown bench arguments: {}", other.join(" "))),
    }
}

fn wire() -> Result {
    run(cargo(&["bench", "-p", "wire", "--bench", "codec"]).env("BENCH_OUT_DIR", out_dir()))
}

fn all() -> Result {
    let started = std::time::Instant::now();
    wire()?;
    let guests = crate::guest::build_bench_guests()?;
    let (stripped, _) = crate::guest::stripped_size(&guests.guest)?;
    let (stripped, budget) = (stripped.to_string(), crate::guest::SIZE_BUDGET_BYTES.to_string());
    // sysbench times QEMU and the host library's I/O, not code that needs
    // fat LTO: it builds in the simulation's profile, so the tests crate is
    // compiled optimised once for both.
    run(crate::sim::cargo_in_profile(
        "run",
        &[
            "-p",
            "tests",
            "--bin",
            "sysbench",
            "--",
            "--guest",
            path(&guests.guest)?,
            "--floor",
            path(&guests.floor)?,
            "--stock",
            path(&guests.stock_echo)?,
            "--stripped-size",
            &stripped,
            "--size-budget",
            &budget,
            "--out",
            path(&out_dir())?,
        ],
    ))?;
    let sim = crate::sim::speed_for_bench()?;
    let report = render(&read_json("wire.json")?, &read_json("system.json")?, &sim);
    std::fs::write(out_dir().join("report.md"), &report.0).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&report.1).map_err(|e| e.to_string())?;
    std::fs::write(out_dir().join("report.json"), json).map_err(|e| e.to_string())?;
    print!("{}", report.0);
    println!("\nreport: {} (took {:.0?})", out_dir().join("report.md").display(), started.elapsed());
    Ok(())
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

fn read_json(name: &str) -> Result<Value> {
    let path = out_dir().join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A number for a table: enough digits to compare, no more.
fn num(v: f64) -> String {
    match v.abs() {
        x if x >= 1000.0 => format!("{v:.0}"),
        x if x >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// `median (min..max)`.
fn spread(v: &Value) -> String {
    let (med, min, max) = (v["median"].as_f64(), v["min"].as_f64(), v["max"].as_f64());
    match (med, min, max) {
        (Some(med), Some(min), Some(max)) if (max - min).abs() > f64::EPSILON => {
            format!("{} ({}..{})", num(med), num(min), num(max))
        }
        (Some(med), ..) => num(med),
        _ => "-".into(),
    }
}

/// The Markdown report and its JSON twin.
fn render(wire: &Value, system: &Value, sim: &Value) -> (String, Value) {
    let mut md = String::from("# picosandbox benchmark report\n\n");
    let _ = writeln!(md, "Every figure is the median of repeated runs (min..max in parentheses), measured");
    let _ = writeln!(md, "next to its baseline in the same run on the same machine; compare ratios.\n");
    md.push_str("## Codec: wire vs serde + ciborium (ns per whole frame)\n\n");
    md.push_str("| message | op | wire | serde+ciborium | speed-up | target |\n|---|---|---:|---:|---:|---|\n");
    let rows = wire["rows"].as_array().map(Vec::as_slice).unwrap_or_default();
    for r in rows {
        let speedup = r["speedup"].as_f64().unwrap_or(0.0);
        let message = r["message"].as_str().unwrap_or("?");
        let target = if CODEC_SMALL_MESSAGES.contains(&message) {
            let met = if speedup >= CODEC_SPEEDUP_TARGET { "met" } else { "MISSED" };
            format!(">= {CODEC_SPEEDUP_TARGET}x: {met}")
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {message} | {} | {} | {} | {}x | {target} |",
            r["op"].as_str().unwrap_or("?"),
            num(r["wire_ns"].as_f64().unwrap_or(0.0)),
            num(r["reference_ns"].as_f64().unwrap_or(0.0)),
            num(speedup)
        );
    }
    for small in CODEC_SMALL_MESSAGES {
        if !rows.iter().any(|r| r["message"] == small) {
            let _ = writeln!(md, "\nno codec row for `{small}`: its >= {CODEC_SPEEDUP_TARGET}x target is MISSED");
        }
    }
    if let Some(ratio) = wire["decode_3mib_over_1kib"].as_f64() {
        let met = if ratio <= 2.0 { "met" } else { "MISSED" };
        let _ =
            writeln!(md, "\nwire decode, 3 MiB FsData / 1 KiB FsData: {ratio:.2}x the time (target: as cheap: {met})");
    }
    let mut group = "";
    for r in system["rows"].as_array().into_iter().flatten() {
        let g = r["group"].as_str().unwrap_or("?");
        if g != group {
            group = g;
            let _ = writeln!(md, "\n## {}\n", title(g));
            md.push_str("| metric | picosandbox | baseline | comparison | target |\n|---|---:|---|---:|---|\n");
        }
        let baseline = match r["baseline"].as_object() {
            Some(b) => format!("{}: {}", b["name"].as_str().unwrap_or("?"), spread(&b["value"])),
            None => String::new(),
        };
        let target = match r["target"].as_object() {
            Some(t) => {
                format!("{}: {}", t["text"].as_str().unwrap_or("?"), if t["met"] == true { "met" } else { "MISSED" })
            }
            None => String::new(),
        };
        let _ = writeln!(
            md,
            "| {} ({}) | {} | {baseline} | {} | {target} |",
            r["metric"].as_str().unwrap_or("?"),
            r["unit"].as_str().unwrap_or(""),
            spread(&r["ours"]),
            r["comparison"].as_str().unwrap_or("")
        );
    }
    md.push_str("\n## Simulation\n\n");
    let _ = writeln!(md, "{}", sim["summary"].as_str().unwrap_or("(no simulation figures)"));
    let json = json!({ "codec": wire, "system": system, "simulation": sim });
    (md, json)
}

fn title(group: &str) -> &str {
    match group {
        "boot" => "Boot",
        "throughput" => "Throughput",
        "latency" => "Small-op latency",
        "fairness" => "Relay fairness",
        "footprint" => "Footprint",
        "idle" => "Idle cost",
        "density" => "Density: many idle sandboxes, the pool, and what each QEMU setting costs",
        other => other,
    }
}
