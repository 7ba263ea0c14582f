//! The QEMU command line, in one place: everything that boots the guest
//! (the library, the CLI, tests, benchmarks) builds it here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

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
        let machine = "microvm,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=on";
        cmd.args(["-M", machine, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
        cmd.args(["-global", "virtio-mmio.force-legacy=false"]);
        match self.accel.resolve() {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            _ => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        };
        cmd.args(["-smp", "1", "-m", &format!("{}M", self.memory_mib)]);
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
