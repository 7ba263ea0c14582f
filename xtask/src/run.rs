//! `cargo xtask run`: build the guest and the CLI, make sure QEMU is
//! there, then open a shell in a fresh sandbox, or, with `--demo` or when
//! standard input is not a terminal, run the scripted demo (exit status 0
//! only if every step checked out).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Command;

use crate::{Result, cargo, run, target_dir};

/// `cargo xtask run [--demo] [picosandbox options...]`.
pub fn command(args: &[&str]) -> Result {
    let demo = args.contains(&"--demo") || !std::io::stdin().is_terminal();
    let passthrough: Vec<&str> = args.iter().copied().filter(|a| *a != "--demo").collect();
    ensure_qemu()?;
    let guest = crate::guest::build()?;
    let cli = build_cli()?;
    let mut cmd = Command::new(&cli);
    cmd.arg(if demo { "demo" } else { "shell" }).arg("--guest").arg(&guest).args(&passthrough);
    run(cmd)
}

/// Builds the `picosandbox` CLI (release) and returns its path.
pub fn build_cli() -> Result<PathBuf> {
    run(cargo(&["build", "--release", "-p", "host-sync", "--bin", "picosandbox"]))?;
    Ok(target_dir().join("release/picosandbox"))
}

/// Installs QEMU when it is missing and this process may (root and apt).
pub fn ensure_qemu() -> Result {
    if host_has_qemu() {
        return Ok(());
    }
    let root_user = effective_uid() == Some(0);
    let apt = Command::new("apt-get").arg("--version").output().is_ok_and(|o| o.status.success());
    if !(root_user && apt) {
        return Err("qemu-system-x86_64 is not installed; install it (Debian/Ubuntu: \
                    `sudo apt-get install -y qemu-system-x86`) and run again"
            .into());
    }
    eprintln!("qemu-system-x86_64 not found: installing it with apt-get");
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "qemu-system-x86"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if host_has_qemu() { Ok(()) } else { Err("qemu-system-x86_64 still missing after apt-get".into()) }
}

fn host_has_qemu() -> bool {
    Command::new("qemu-system-x86_64").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The effective user id, from `id -u` (xtask stays std-only).
fn effective_uid() -> Option<u32> {
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
