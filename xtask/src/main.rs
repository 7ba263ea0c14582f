//! Project automation, in Rust: `cargo xtask <command>`.
//!
//! Every command prints what it runs, and stops at the first failure with
//! a non-zero exit status.

mod bench;
mod fuzz;
mod guest;
mod run;
mod sim;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const HELP: &str = "\
cargo xtask <command> [options]

Commands:
  run [--demo]           build everything, boot a sandbox and open a shell in it; with --demo
                         (or when stdin is not a terminal) run the checked scripted demo
  test                   formatting, clippy, every test, no_std build checks (what CI runs)
  bench [wire]           every benchmark against its baseline, into target/bench/report.md
                         and report.json; `wire` runs only the codec benchmark
  fuzz wire [--seconds N] [--target decode|roundtrip]
                         fuzz the codec with libFuzzer (default 60 s per target),
                         seeded from the golden vectors
  guest                  build the guest unikernel; print its ELF path and stripped size
  sim --seed S | [--seeds N] [--start S] [--minutes M] [--seconds S] [--options K=V,...]
                         deterministic simulation of agent and host (release build):
                         replay one seed, or sweep seeds from S (default: from the clock)
  help                   this text
";

/// A failed step: what was run and why it failed.
pub type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["test", rest @ ..] => test(rest),
        ["bench", rest @ ..] => bench::command(rest),
        ["fuzz", "wire", rest @ ..] => fuzz::command(rest),
        ["guest"] => guest::command(),
        ["run", rest @ ..] => run::command(rest),
        ["sim", rest @ ..] => sim::command(rest),
        [] | ["help" | "--help" | "-h", ..] => {
            print!("{HELP}");
            Ok(())
        }
        _ => Err(format!("unknown command: {}\n\n{HELP}", args.join(" "))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root. `cargo run` sets `CARGO_MANIFEST_DIR` for the
/// running xtask too; that value wins over the one compiled in, so an
/// xtask binary built from another checkout sharing the target directory
/// still works on this one.
pub fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let manifest_dir = manifest_dir.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().expect("xtask/ has a parent").to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace
/// root, as cargo reads it) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// A `cargo` command run from the workspace root.
pub fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).current_dir(root());
    cmd
}

/// A command as it is echoed and named in errors: program and arguments.
pub fn shown(cmd: &Command) -> String {
    let mut shown = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    shown
}

/// Runs a command, echoing it; fails on a non-zero status.
pub fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> Result {
    let cmd = cmd.borrow_mut();
    let shown = shown(cmd);
    eprintln!("\n$ {shown}");
    let status = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{shown}: {status}")) }
}

/// The `no_std` crates: they must build for a bare-metal target and must
/// not use `alloc`.
const NO_STD_CRATES: &[&str] = &["wire", "agent-core"];

/// The bare-metal target the `no_std` crates and the guest build for.
pub const GUEST_TARGET: &str = "x86_64-unknown-none";

/// Makes sure the bare-metal target is installed (rustup, when present).
pub fn ensure_guest_target() -> Result {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == GUEST_TARGET))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", GUEST_TARGET]))
}

fn test(args: &[&str]) -> Result {
    if let Some(arg) = args.first() {
        return Err(format!("`test` takes no arguments, got {arg}"));
    }
    run(cargo(&["fmt", "--all", "--", "--check"]))?;
    run(cargo(&["clippy", "--workspace", "--exclude", "unikernel", "--all-targets", "--", "-D", "warnings"]))?;
    run(cargo(&["clippy", "-p", "unikernel", "--target", GUEST_TARGET, "--profile", "guest", "--", "-D", "warnings"]))?;
    let guests = guest::build_bench_guests()?;
    // The whole workspace, as `cargo test` at the root runs it (the guest
    // crate has no host tests, but its features are unified in).
    run(cargo(&["test", "--workspace"])
        .env("PICOSANDBOX_GUEST", &guests.guest)
        .env("PICOSANDBOX_FLOOR", &guests.floor)
        .env("PICOSANDBOX_STOCK_ECHO", &guests.stock_echo))?;
    no_std_checks()?;
    sim::sweep_for_test()?;
    Ok(())
}

/// Compiles and lints the `no_std` crates for the bare-metal target, and
/// checks their sources never reach for `alloc` (which that target would
/// provide).
///
/// One clippy run covers both crates: it runs the whole compiler front end
/// for the target (a library's build adds only code generation), and the
/// guest build before it has already compiled both for that target with
/// the features the guest uses.
fn no_std_checks() -> Result {
    ensure_guest_target()?;
    let mut args = vec!["clippy"];
    for krate in NO_STD_CRATES {
        args.extend(["-p", krate]);
    }
    args.extend(["--target", GUEST_TARGET, "--", "-D", "warnings"]);
    run(cargo(&args))?;
    for krate in NO_STD_CRATES {
        check_no_alloc(&root().join(krate).join("src"))?;
    }
    eprintln!("no_std checks passed: {}", NO_STD_CRATES.join(", "));
    Ok(())
}

/// Fails if any source file under `dir` declares or uses the `alloc` crate.
fn check_no_alloc(dir: &Path) -> Result {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            check_no_alloc(&path)?;
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("extern crate alloc") || line.starts_with("use alloc::") {
                return Err(format!("{}:{}: uses alloc", path.display(), n + 1));
            }
        }
    }
    Ok(())
}
