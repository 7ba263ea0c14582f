//! `cargo xtask fuzz wire`: libFuzzer on the codec, seeded from the vectors.
//!
//! Needs `cargo-fuzz` (installed on first use) and nightly compiler flags:
//! the nightly toolchain when rustup has one, otherwise the stable compiler
//! with `RUSTC_BOOTSTRAP=1`.

use std::path::Path;
use std::process::Command;

use crate::{Result, cargo, root};

const TARGETS: &[&str] = &["decode", "roundtrip"];

/// Fuzzes each target for `seconds`, seeded from the vectors.
pub fn run_targets(seconds: u64, targets: &[&str]) -> Result {
    ensure_cargo_fuzz()?;
    let fuzz_dir = root().join("wire/fuzz");
    let mut summary = Vec::new();
    for target in targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        let seeds = write_seeds(&corpus)?;
        eprintln!("{target}: {seeds} seed frames from the vectors in {}", corpus.display());
        let mut cmd = fuzz_command(&fuzz_dir);
        cmd.args(["run", target, corpus.to_str().unwrap_or_default(), "--", &format!("-max_total_time={seconds}")]);
        let output = run_capturing_stderr(&mut cmd)?;
        let runs = output.lines().rev().find_map(|l| l.strip_prefix("Done ")).unwrap_or("(no summary)").to_string();
        summary.push(format!("{target}: {runs}"));
    }
    eprintln!("\nfuzzing finished without a crash:");
    for line in summary {
        eprintln!("  {line}");
    }
    Ok(())
}

/// `cargo xtask fuzz wire [--seconds N] [--target T]`.
pub fn command(args: &[&str]) -> Result {
    let mut seconds = 60u64;
    let mut targets: Vec<&str> = TARGETS.to_vec();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--seconds" => {
                seconds = args.next().and_then(|s| s.parse().ok()).ok_or("--seconds takes a number of seconds")?;
            }
            "--target" => {
                let t = args.next().ok_or("--target takes decode or roundtrip")?;
                if !TARGETS.contains(t) {
                    return Err(format!("unknown fuzz target {t}; targets: {}", TARGETS.join(", ")));
                }
                targets = vec![t];
            }
            other => return Err(format!("unknown fuzz option {other}")),
        }
    }
    run_targets(seconds, &targets)
}

fn ensure_cargo_fuzz() -> Result {
    let present = cargo(&["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    crate::run(cargo(&["install", "cargo-fuzz", "--locked"]))
}

/// `cargo fuzz`, on nightly when rustup has it, else with nightly flags
/// unlocked on the stable compiler.
fn fuzz_command(dir: &Path) -> Command {
    let has_nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("nightly")))
        .unwrap_or(false);
    let mut cmd = Command::new("cargo");
    if has_nightly {
        cmd.arg("+nightly");
    } else {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    cmd.arg("fuzz").current_dir(dir);
    cmd
}

/// Runs a command with stderr shown live and also returned (libFuzzer
/// prints its summary there).
fn run_capturing_stderr(cmd: &mut Command) -> Result<String> {
    use std::io::{BufRead, BufReader};
    let shown = crate::shown(cmd);
    eprintln!("\n$ {shown}");
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().map_err(|e| format!("{shown}: {e}"))?;
    let mut text = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(std::result::Result::ok) {
            if !line.starts_with("#") || line.contains("DONE") || line.contains("INITED") {
                eprintln!("{line}");
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() { Ok(text) } else { Err(format!("{shown}: {status}")) }
}

/// Writes every frame of the vector files into `corpus/` (one file each).
fn write_seeds(corpus: &Path) -> Result<usize> {
    std::fs::create_dir_all(corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let mut count = 0;
    for (var, name) in [("WIRE_VECTORS", "public.json"), ("WIRE_INVALID_VECTORS", "invalid.json")] {
        let path = vector_path(var, name);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let vectors: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for v in vectors.as_array().into_iter().flatten() {
            let (Some(name), Some(hex)) = (v["name"].as_str(), v["frame_hex"].as_str()) else { continue };
            let bytes: Option<Vec<u8>> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
            let Some(bytes) = bytes else { continue };
            std::fs::write(corpus.join(format!("vector-{name}")), bytes).map_err(|e| e.to_string())?;
            count += 1;
        }
    }
    Ok(count)
}

/// The vector file named by `var`, else `../shared/vectors/NAME`, else the
/// copy in `tests/vectors/` (the same rule as the vector tests).
fn vector_path(var: &str, name: &str) -> std::path::PathBuf {
    if let Some(p) = std::env::var_os(var) {
        let p = std::path::PathBuf::from(p);
        return if p.is_absolute() { p } else { root().join(p) };
    }
    let shared = root().join("../shared/vectors").join(name);
    if shared.exists() { shared } else { root().join("tests/vectors").join(name) }
}
