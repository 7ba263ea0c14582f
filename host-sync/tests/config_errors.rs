//! Bad configuration gets a clear error at once: each case of `picosandbox
//! run` a new user runs into, with its exit code and message, and the
//! guest's own reason carried into a boot failure. Nothing here waits for
//! a boot timeout: the checks run before QEMU starts, and a guest that
//! fails says so as it exits.
//!
//! They need the guest ELF (`cargo xtask guest`, or `PICOSANDBOX_GUEST`);
//! the cases that boot need `qemu-system-x86_64`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use host_sync::cli::{EXIT_SANDBOX, EXIT_USAGE};
use host_sync::config::{self, MAX_MEMORY_MIB, MIN_QEMU_VERSION};
use host_sync::{Error, Sandbox, SandboxConfig};

mod common;
use common::{guest_elf, one_qemu};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("config-errors-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `picosandbox run` with the guest and `args`; it must exit by itself.
fn run(args: &[&str], path: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_picosandbox"));
    cmd.arg("run").arg("--guest").arg(guest_elf()).args(args).stdin(Stdio::null());
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn min_mib() -> u32 {
    config::read_guest(&guest_elf()).unwrap().1.min_memory_mib()
}

fn assert_refused(out: &Output, code: u8, message: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(i32::from(code)), "{err}");
    assert!(err.starts_with(&format!("picosandbox: {message}")), "expected `{message}`, got: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn too_little_memory_is_refused_naming_the_minimum() {
    let min = min_mib();
    for memory in ["1", "4", &(min - 1).to_string()] {
        let out = run(&["--memory", memory], None);
        assert_refused(
            &out,
            EXIT_USAGE,
            &format!("--memory {memory}: too small: the guest needs at least {min} MiB ("),
        );
        assert!(
            stderr(&out).contains("receive buffer")
                && stderr(&out).trim_end().ends_with(&format!("give it {min} MiB or more"))
        );
    }
}

#[test]
fn memory_zero_is_refused_not_left_to_qemu() {
    let out = run(&["--memory", "0"], None);
    assert_refused(&out, EXIT_USAGE, "--memory 0: too small (0 would let QEMU pick its own size)");
}

#[test]
fn more_memory_than_the_guest_can_use_is_refused() {
    let over = (MAX_MEMORY_MIB + 1).to_string();
    let out = run(&["--memory", &over], None);
    assert_refused(&out, EXIT_USAGE, &format!("--memory {over}: more than"));
    assert!(
        stderr(&out).contains(&format!("give it at most {MAX_MEMORY_MIB} MiB"))
            || stderr(&out).contains("this host has")
    );
}

#[test]
fn a_file_that_is_not_a_guest_is_refused_before_qemu_starts() {
    let dir = scratch("not-a-guest");
    let cmd = |guest: &Path| {
        Command::new(env!("CARGO_BIN_EXE_picosandbox")).arg("run").arg("--guest").arg(guest).output().unwrap()
    };
    let out = cmd(Path::new("/etc/passwd"));
    assert_refused(&out, EXIT_USAGE, "--guest /etc/passwd: not a picosandbox guest: no ELF header; ");
    // The real guest with its PVH note's type changed.
    let mut elf = std::fs::read(guest_elf()).unwrap();
    let header = [4, 0, 0, 0, 8, 0, 0, 0, 18, 0, 0, 0, b'X', b'e', b'n', 0];
    let at = elf.windows(header.len()).position(|w| w == header).expect("the PVH note");
    elf[at + 8] = 19;
    let no_note = dir.join("no-note");
    std::fs::write(&no_note, &elf).unwrap();
    let out = cmd(&no_note);
    assert_refused(
        &out,
        EXIT_USAGE,
        &format!("--guest {}: not a picosandbox guest: no PVH entry note", no_note.display()),
    );
    let missing = dir.join("missing");
    let out = cmd(&missing);
    assert_refused(
        &out,
        EXIT_USAGE,
        &format!("--guest {}: cannot open it: No such file or directory", missing.display()),
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_or_old_qemu_is_named() {
    let dir = scratch("qemu");
    let out = run(&["--memory", "64"], Some(&dir));
    assert_refused(&out, EXIT_SANDBOX, "cannot boot the sandbox: qemu-system-x86_64 is not on PATH; install QEMU");
    let fake = dir.join("qemu-system-x86_64");
    std::fs::write(&fake, "#!/bin/sh\necho 'QEMU emulator version 5.0.1'\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(&["--memory", "64"], Some(&dir));
    assert_refused(
        &out,
        EXIT_SANDBOX,
        &format!(
            "cannot boot the sandbox: QEMU 5.0.1 at {} is too old: picosandbox needs {MIN_QEMU_VERSION}",
            fake.display()
        ),
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn forced_kvm_on_a_software_module_is_warned_about() {
    let _q = one_qemu();
    let kvm = config::kvm_state();
    let mut child = Command::new(env!("CARGO_BIN_EXE_picosandbox"))
        .arg("run")
        .arg("--guest")
        .arg(guest_elf())
        .args(["--accel", "kvm", "--memory", "64"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stderr.take().unwrap()).lines().next().and_then(Result::ok).unwrap_or_default();
    // Whatever happens next (a boot, or QEMU refusing this KVM), stop it.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let status = child.wait().unwrap();
    let hardware = kvm.modules.iter().any(|m| config::HARDWARE_KVM_MODULES.contains(&m.as_str()));
    if !kvm.dev_kvm {
        assert_eq!(first, "picosandbox: --accel kvm: this host has no /dev/kvm; use tcg, or auto to pick");
        assert_eq!(status.code(), Some(i32::from(EXIT_USAGE)));
    } else if !hardware {
        let modules = if kvm.modules.is_empty() { "no KVM module".to_string() } else { kvm.modules.join(", ") };
        assert_eq!(
            first,
            format!(
                "picosandbox: warning: --accel kvm: /dev/kvm is backed by {modules}, not kvm_intel or kvm_amd: a \
                 software KVM runs this guest far slower than TCG; use auto (TCG on this host) or tcg"
            )
        );
    } else {
        assert!(!first.contains("warning"), "{first}");
    }
}

#[test]
fn the_least_memory_allowed_boots() {
    let _q = one_qemu();
    let mut config = SandboxConfig::new(guest_elf());
    config.memory_mib = min_mib();
    let sandbox = Sandbox::start(config).expect("the guest boots in its minimum");
    sandbox.fs().write("/f", "fits").unwrap();
    assert!(sandbox.shutdown(Duration::from_secs(10)).unwrap().success());
}

/// The real guest, with its bss left out of its program headers: the host
/// then computes a minimum too small for it, as it would for a guest whose
/// ELF understated its needs, and the guest runs out of memory as it starts.
fn understated_guest(dir: &Path) -> PathBuf {
    let mut elf = std::fs::read(guest_elf()).unwrap();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let phoff = u64_at(&elf, 32) as usize;
    let (phentsize, phnum) = (u16::from_le_bytes([elf[54], elf[55]]) as usize, u16::from_le_bytes([elf[56], elf[57]]));
    for i in 0..phnum as usize {
        let h = phoff + i * phentsize;
        if u32::from_le_bytes(elf[h..h + 4].try_into().unwrap()) == 1 {
            let filesz = u64_at(&elf, h + 32);
            elf[h + 40..h + 48].copy_from_slice(&filesz.to_le_bytes());
        }
    }
    let path = dir.join("understated");
    std::fs::write(&path, elf).unwrap();
    path
}

#[test]
fn a_guest_out_of_memory_says_so_with_its_log() {
    let _q = one_qemu();
    let dir = scratch("oom");
    let guest = understated_guest(&dir);
    let memory = config::read_guest(&guest).unwrap().1.min_memory_mib();
    assert!(memory < min_mib(), "the understated guest must pass the check with too little memory");
    let out = Command::new(env!("CARGO_BIN_EXE_picosandbox"))
        .arg("run")
        .arg("--guest")
        .arg(&guest)
        .args(["--memory", &memory.to_string()])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(i32::from(EXIT_SANDBOX)), "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "picosandbox: cannot boot the sandbox: the guest ran out of memory (QEMU exit status 13); give it more \
             than {memory} MiB"
        )
    );
    assert_eq!(err.matches("cannot boot").count(), 1, "{err}");
    assert!(err.contains("the guest's last log lines:") && err.contains("cannot hold the agent's buffers"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_guest_panic_during_boot_says_so_with_its_log() {
    let _q = one_qemu();
    let mut config = SandboxConfig::new(guest_elf());
    config.memory_mib = 64;
    config.cmdline = "mode=panic".into();
    let e = Sandbox::start(config).err().expect("a panicking guest does not boot");
    let Error::Boot(message) = &e else { panic!("{e}") };
    assert!(message.starts_with("the guest panicked (QEMU exit status 3)"), "{e}");
    assert!(message.contains("panic requested by mode=panic"), "{e}");
    assert!(e.to_string().starts_with("cannot boot the sandbox: the guest panicked"));
}
