//! The QEMU command line, in one place: everything that boots the guest
//! (the library, the CLI, tests, benchmarks) builds it here.

use crate::sync::lock;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How the guest's CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM when a hardware KVM module (`kvm_intel`/`kvm_amd`) is loaded, else TCG.
    Auto,
    /// Hardware virtualisation (`-accel kvm -cpu host`).
    Kvm,
    /// Software emulation (`-accel tcg -cpu max`).
    Tcg,
}

impl Accel {
    /// Resolves `Auto`: KVM only with a hardware KVM module loaded, since a
    /// software `/dev/kvm` (e.g. `kvm_pvm`) runs this guest far slower than TCG.
    pub fn resolve(self) -> Accel {
        match self {
            Accel::Auto if hardware_kvm() => Accel::Kvm,
            Accel::Auto => Accel::Tcg,
            other => other,
        }
    }
}

/// Whether a hardware KVM module is loaded and `/dev/kvm` exists.
pub fn hardware_kvm() -> bool {
    let loaded = |m: &str| Path::new("/sys/module").join(m).exists();
    Path::new("/dev/kvm").exists() && (loaded("kvm_intel") || loaded("kvm_amd"))
}

/// Everything that varies between guest boots.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The `qemu-system-x86_64` binary.
    pub qemu: PathBuf,
    /// The guest ELF (PVH entry).
    pub guest: PathBuf,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// CPU acceleration.
    pub accel: Accel,
    /// Unix socket the host listens on; QEMU connects to it for the agent console.
    pub agent_socket: PathBuf,
    /// Which virtio-serial port carries the agent console.
    pub console: ConsolePort,
    /// Where the guest's debugcon (port 0xe9, defmt frames) goes: a Unix
    /// socket the host listens on, or a file.
    pub log: LogSink,
    /// The guest kernel command line.
    pub cmdline: String,
    /// QEMU's seccomp filter (`-sandbox`), or `None` to run it unconfined.
    pub seccomp: Option<SeccompPolicy>,
    /// Memory and translation settings (see [`Tuning`]).
    pub tuning: Tuning,
}

/// Settings that trade QEMU's memory per sandbox against speed; the
/// density benchmark measures each. The defaults are what it found best.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuning {
    /// TCG's translation cache in MiB (`-accel tcg,tb-size=N`); QEMU's
    /// default (1 GiB, touched only as code is translated) when `None`.
    /// Ignored under KVM.
    pub tb_size_mib: Option<u32>,
    /// Let QEMU back its memory with transparent huge pages. Off by
    /// default (`PR_SET_THP_DISABLE` before QEMU starts): QEMU asks for
    /// huge pages on guest RAM and its translation cache, so each first
    /// touch there costs 2 MiB instead of 4 KiB: about 6 MiB more per idle
    /// sandbox.
    pub huge_pages: bool,
    /// Where guest RAM comes from.
    pub ram: RamBackend,
    /// Give the guest microvm's ACPI tables and its generic event device.
    /// Off by default (`acpi=off`): the guest finds its devices at fixed
    /// addresses and powers off by a triple fault (`-no-reboot` makes that
    /// exit 0), and the tables cost QEMU about 3 MiB per sandbox.
    pub acpi: bool,
}

/// The memory backend of guest RAM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RamBackend {
    /// QEMU's implicit anonymous RAM (`-m` alone).
    #[default]
    Anonymous,
    /// A `memory-backend-memfd` (shared memory: never huge pages, as
    /// `shmem_enabled` is `never` by default).
    Memfd,
}

/// The `-sandbox` options picosandbox asks for: each denies a class of
/// system calls QEMU does not need to run this guest.
pub const SECCOMP_DENY: [&str; 4] = ["obsolete", "elevateprivileges", "spawn", "resourcecontrol"];

/// How long the probe run that checks QEMU's `-sandbox` support may take.
pub const SECCOMP_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// QEMU's seccomp filter: `-sandbox on` with each of [`Self::deny`] set to
/// `deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompPolicy {
    /// The classes denied.
    pub deny: Vec<&'static str>,
    /// The classes of [`SECCOMP_DENY`] the installed QEMU does not know,
    /// so they stay allowed.
    pub missing: Vec<&'static str>,
}

impl SeccompPolicy {
    /// The full policy, [`SECCOMP_DENY`].
    pub fn full() -> SeccompPolicy {
        SeccompPolicy { deny: SECCOMP_DENY.to_vec(), missing: Vec::new() }
    }

    /// The `-sandbox` argument.
    pub fn arg(&self) -> String {
        let mut arg = String::from("on");
        for class in &self.deny {
            arg.push_str(&format!(",{class}=deny"));
        }
        arg
    }

    /// A warning for a policy short of the full one, naming what is missing.
    pub fn shortfall(&self) -> Option<String> {
        (!self.missing.is_empty()).then(|| {
            format!(
                "this QEMU's -sandbox does not know {}: those system calls stay allowed to it",
                self.missing.iter().map(|m| format!("{m}=deny")).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// What the installed QEMU can confine itself with: the policy it accepts,
/// or why it runs unconfined. Probed once per QEMU binary and process
/// (a short run of `qemu -sandbox ... -M none`, see [`probe_seccomp`]).
pub fn seccomp_support(qemu: &Path) -> Result<SeccompPolicy, String> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Result<SeccompPolicy, String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(known) = lock(cache).get(qemu) {
        return known.clone();
    }
    let probed = probe_seccomp(qemu);
    lock(cache).insert(qemu.to_path_buf(), probed.clone());
    probed
}

/// Runs `qemu -sandbox on,<class>=deny... -M none -S` and tells it to quit:
/// the policy it accepted, dropping each class it names as unknown, or why
/// it cannot confine itself at all (built without seccomp, a kernel
/// without it, ...).
pub fn probe_seccomp(qemu: &Path) -> Result<SeccompPolicy, String> {
    let mut policy = SeccompPolicy::full();
    loop {
        let (ok, stderr) = probe_run(qemu, &policy.arg())?;
        if ok {
            return Ok(policy);
        }
        let unknown = stderr
            .split("Invalid parameter '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .and_then(|name| policy.deny.iter().position(|d| *d == name));
        match unknown {
            Some(at) => {
                let class = policy.deny.remove(at);
                policy.missing.push(class);
            }
            None => {
                let said = stderr.trim();
                return Err(if said.is_empty() { "QEMU refused -sandbox".into() } else { said.to_string() });
            }
        }
    }
}

/// One probe run: whether QEMU started with `-sandbox arg` and quit when
/// told, and what it printed on standard error.
fn probe_run(qemu: &Path, arg: &str) -> Result<(bool, String), String> {
    let mut child = Command::new(qemu)
        .args(["-sandbox", arg, "-M", "none", "-nodefaults", "-no-user-config", "-display", "none", "-S"])
        .args(["-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {}", qemu.display(), crate::error::os_text(&e)))?;
    if let Some(mut stdin) = child.stdin.take() {
        // QEMU may have exited already (a refused option): then the pipe is closed.
        let _ = stdin.write_all(b"quit\n");
    }
    let deadline = Instant::now() + SECCOMP_PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("QEMU did not quit within {SECCOMP_PROBE_TIMEOUT:?} of a probe run"));
            }
            Err(e) => return Err(format!("waiting for the probe run: {e}")),
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    Ok((status.success(), stderr))
}

/// How the agent console is attached to the guest's `virtio-serial-device`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConsolePort {
    /// A `virtserialport`, port 1 of a multiport device: the port the guest
    /// drives. QEMU throttles a serial port whose socket is full, so
    /// nothing is lost.
    #[default]
    SerialPort,
    /// A `virtconsole` on port 0, for single-port drivers (the stock
    /// virtio-drivers console the benchmark compares against). QEMU drops
    /// console output the socket cannot take at once.
    Console,
}

/// Where the guest log goes.
#[derive(Debug, Clone)]
pub enum LogSink {
    /// A Unix socket the host listens on.
    Socket(PathBuf),
    /// A file.
    File(PathBuf),
    /// Nowhere.
    None,
}

/// The I/O port of QEMU's `isa-debug-exit` device: the guest writes a
/// value `v` there to make QEMU exit with status `(v << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// QEMU's exit status when the guest writes `code` to `isa-debug-exit`.
pub const fn debug_exit_status(code: u8) -> i32 {
    ((code as i32) << 1) | 1
}

/// The guest's failure exit code for running out of memory
/// (`ExitCode::Memory` in `unikernel/src/platform.rs`).
pub const GUEST_EXIT_MEMORY: u8 = 6;

/// The guest's failure exit codes (`ExitCode` in
/// `unikernel/src/platform.rs`) and what each means.
pub const GUEST_EXITS: [(u8, &str); 6] = [
    (1, "the guest panicked"),
    (2, "the guest gave up waiting for the host's handshake"),
    (3, "the guest hit a CPU exception"),
    (4, "the guest's console is missing or broke"),
    (5, "the loader gave the guest no usable boot information"),
    (GUEST_EXIT_MEMORY, "the guest ran out of memory"),
];

/// What a QEMU exit status says the guest did, when the guest chose it.
pub fn guest_exit_reason(status: i32) -> Option<&'static str> {
    GUEST_EXITS.iter().find(|(code, _)| debug_exit_status(*code) == status).map(|(_, why)| *why)
}

/// The I/O port of the debug console the guest logs to.
pub const DEBUGCON_PORT: u16 = 0xe9;

/// Locates `qemu-system-x86_64` on `PATH`.
pub fn find_qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("qemu-system-x86_64")).find(|p| p.is_file())
}

impl QemuConfig {
    /// The full command line.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.qemu);
        // `auto-kernel-cmdline=off`: no `virtio_mmio.device=` words for
        // Linux on the command line (the guest scans the slots itself), so
        // the guest parses only what the caller passes.
        let mut machine =
            String::from("microvm,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=on,auto-kernel-cmdline=off");
        if !self.tuning.acpi {
            machine.push_str(",acpi=off");
        }
        cmd.args(["-M", &machine, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
        cmd.args(["-global", "virtio-mmio.force-legacy=false"]);
        match (self.accel.resolve(), self.tuning.tb_size_mib) {
            (Accel::Kvm, _) => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            (_, Some(tb)) => cmd.args(["-accel", &format!("tcg,tb-size={tb}"), "-cpu", "max"]),
            (_, None) => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        };
        cmd.args(["-smp", "1", "-m", &format!("{}M", self.memory_mib)]);
        if self.tuning.ram == RamBackend::Memfd {
            cmd.args(["-object", &format!("memory-backend-memfd,id=ram,size={}M", self.memory_mib)]);
            cmd.args(["-machine", "memory-backend=ram"]);
        }
        if !self.tuning.huge_pages {
            // SAFETY: runs in the forked child before exec and makes one
            // async-signal-safe system call; the setting survives exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(policy) = &self.seccomp {
            cmd.args(["-sandbox", &policy.arg()]);
        }
        cmd.arg("-kernel").arg(&self.guest);
        cmd.arg("-append").arg(&self.cmdline);
        cmd.arg("-chardev").arg(chardev_socket("agent", &self.agent_socket));
        cmd.args(["-device", "virtio-serial-device"]);
        match self.console {
            // A serial port, not `virtconsole`: QEMU drops console output
            // the socket cannot take at once, while a serial port throttles.
            // `nr=1` is the port the guest drives.
            ConsolePort::SerialPort => cmd.args(["-device", "virtserialport,chardev=agent,name=agent,nr=1"]),
            ConsolePort::Console => cmd.args(["-device", "virtconsole,chardev=agent,name=agent"]),
        };
        match &self.log {
            LogSink::Socket(path) => {
                cmd.arg("-chardev").arg(chardev_socket("log", path));
            }
            LogSink::File(path) => {
                let mut spec = OsString::from("file,id=log,path=");
                spec.push(path);
                cmd.arg("-chardev").arg(spec);
            }
            LogSink::None => {
                cmd.args(["-chardev", "null,id=log"]);
            }
        }
        cmd.args(["-device", &format!("isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=log")]);
        cmd.args(["-device", &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04")]);
        cmd.args(["-serial", "none", "-monitor", "none"]);
        cmd
    }
}

/// `socket,id=ID,path=PATH`: QEMU connects to a socket the host listens on.
fn chardev_socket(id: &str, path: &Path) -> OsString {
    let mut spec = OsString::from(format!("socket,id={id},path="));
    spec.push(path);
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seccomp_argument_denies_each_class() {
        assert_eq!(
            SeccompPolicy::full().arg(),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        );
        assert_eq!(SeccompPolicy::full().shortfall(), None);
        let partial = SeccompPolicy { deny: vec!["obsolete"], missing: vec!["spawn"] };
        assert_eq!(partial.arg(), "on,obsolete=deny");
        assert_eq!(
            partial.shortfall().unwrap(),
            "this QEMU's -sandbox does not know spawn=deny: those system calls stay allowed to it"
        );
    }

    /// A stand-in QEMU: a shell script with `body`.
    fn fake_qemu(name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("fake-qemu-{name}-{}", std::process::id()));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_qemu_that_lacks_a_class_runs_with_the_others_and_names_it() {
        // Refuses `spawn` and `resourcecontrol` as an older QEMU would;
        // accepts the rest and quits when told.
        let qemu = fake_qemu(
            "partial",
            r#"case "$2" in
  *spawn=deny*) echo "qemu-system-x86_64: -sandbox $2: Invalid parameter 'spawn'" >&2; exit 1;;
  *resourcecontrol=deny*) echo "qemu-system-x86_64: -sandbox $2: Invalid parameter 'resourcecontrol'" >&2; exit 1;;
esac
read line; [ "$line" = quit ]"#,
        );
        let policy = probe_seccomp(&qemu).unwrap();
        assert_eq!(policy.deny, ["obsolete", "elevateprivileges"]);
        assert_eq!(policy.missing, ["spawn", "resourcecontrol"]);
        assert_eq!(policy.arg(), "on,obsolete=deny,elevateprivileges=deny");
        assert!(policy.shortfall().unwrap().contains("spawn=deny, resourcecontrol=deny"));
        std::fs::remove_file(qemu).unwrap();
    }

    #[test]
    fn a_qemu_without_seccomp_says_why() {
        let qemu =
            fake_qemu("none", "echo \"qemu-system-x86_64: -sandbox: There is no option group 'sandbox'\" >&2; exit 1");
        assert_eq!(
            probe_seccomp(&qemu),
            Err("qemu-system-x86_64: -sandbox: There is no option group 'sandbox'".into())
        );
        std::fs::remove_file(qemu).unwrap();
    }

    #[test]
    fn a_missing_qemu_cannot_confine() {
        let e = probe_seccomp(Path::new("/nonexistent/qemu-system-x86_64")).unwrap_err();
        assert!(e.starts_with("cannot run /nonexistent/qemu-system-x86_64: "), "{e}");
    }

    #[test]
    fn guest_exit_statuses_decode() {
        assert_eq!(guest_exit_reason(13), Some("the guest ran out of memory"));
        assert_eq!(guest_exit_reason(3), Some("the guest panicked"));
        // 1 is QEMU's own failure, 0 a clean power-off.
        assert_eq!(guest_exit_reason(1), None);
        assert_eq!(guest_exit_reason(0), None);
    }
}
