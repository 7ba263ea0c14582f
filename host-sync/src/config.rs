//! Checks a sandbox's configuration before QEMU starts, in one place for
//! the library ([`SandboxConfig::check`]) and the CLI: the guest file is a
//! picosandbox guest, its memory fits between what the guest needs and
//! what it (and the host) can use, QEMU is there and new enough, and a
//! KVM that would run the guest badly is named. A bad value fails at once
//! with the value, the bound and the reason, instead of a boot that hangs
//! or fails with QEMU's words.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::ClientOptions;
pub use crate::error::{ConfigError, Setting};
use crate::error::{Error, Result};
use crate::guest_log::GuestLog;
use crate::qemu::{Accel, Tuning, find_qemu};
use crate::relay_core::RelayOptions;
use crate::sync::lock;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// Where the guest image is loaded (`unikernel/linker.ld`); the legacy
/// areas and the loader's data lie below it.
pub const GUEST_LOAD_ADDRESS: u64 = 0x10_0000;

/// The agent's receive buffer in the guest: one frame of the largest size
/// (`AGENT_RX_BYTES` in `unikernel/src/main.rs`).
pub const GUEST_AGENT_RX_BYTES: u64 = agent_core::MIN_RX_BUFFER as u64;

/// The agent's outbox in the guest (`AGENT_TX_BYTES` in
/// `unikernel/src/main.rs`).
pub const GUEST_AGENT_OUTBOX_BYTES: u64 = MIB;

/// The smallest filesystem the guest can make.
pub const GUEST_RAMFS_MIN_BYTES: u64 = agent_core::ramfs::MIN_ARENA_BYTES as u64;

/// The guest's page size: its free memory starts at the page after the image.
pub const GUEST_PAGE_BYTES: u64 = 4096;

/// The most memory the guest can use: it keeps its data in RAM below
/// 3 GiB (`ARENA_LIMIT` in `unikernel/src/memory.rs`), where microvm's
/// device window starts; QEMU puts anything more above 4 GiB, which the
/// guest does not map.
pub const MAX_MEMORY_MIB: u32 = 3072;

/// The oldest QEMU picosandbox boots with: the microvm options, virtio-mmio
/// and ACPI behaviour it relies on are those of 7.2, the version it is
/// tested with.
pub const MIN_QEMU_VERSION: QemuVersion = QemuVersion { major: 7, minor: 2, patch: 0 };

/// How long `qemu-system-x86_64 --version` may take.
pub const QEMU_VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest guest file read for checking: a guest is a few MiB with its
/// debug information.
pub const MAX_GUEST_FILE_BYTES: u64 = 256 * MIB;

/// The ELF note type of the PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`,
/// name `Xen`): QEMU boots an ELF through `-kernel` only with it.
pub const PVH_NOTE_TYPE: u32 = 18;

/// How to boot a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The guest ELF.
    pub guest: PathBuf,
    /// `qemu-system-x86_64`; found on `PATH` when `None`.
    pub qemu: Option<PathBuf>,
    /// Guest RAM in MiB (the ramfs gets all but a few MiB).
    pub memory_mib: u32,
    /// CPU acceleration.
    pub accel: Accel,
    /// Spawn to `core.ready`, at most.
    pub boot_timeout: Duration,
    /// Share the guest through a relay socket (see [`Sandbox::relay_socket`](crate::Sandbox::relay_socket)).
    pub relay: bool,
    /// The relay's settings: whether its clients may send `core.shutdown`,
    /// and its queue bounds.
    pub relay_options: RelayOptions,
    /// Where the decoded guest log goes.
    pub guest_log: GuestLog,
    /// Settings of the sandbox's own client.
    pub client: ClientOptions,
    /// Extra guest command line options.
    pub cmdline: String,
    /// Confine QEMU with its seccomp filter (`-sandbox on,` every class of
    /// [`qemu::SECCOMP_DENY`](crate::qemu::SECCOMP_DENY) denied) where the installed QEMU supports it;
    /// on by default. Where it does not, the sandbox runs unconfined and a
    /// warning says what is missing ([`Sandbox::seccomp`](crate::Sandbox::seccomp) tells which).
    pub confine: bool,
    /// QEMU's memory and translation settings.
    pub tuning: Tuning,
}

impl SandboxConfig {
    /// Defaults for a guest ELF: 512 MiB, accel auto, 30 s boot timeout,
    /// no relay, quiet log.
    pub fn new(guest: impl Into<PathBuf>) -> SandboxConfig {
        SandboxConfig {
            guest: guest.into(),
            qemu: None,
            memory_mib: 512,
            accel: Accel::Auto,
            boot_timeout: Duration::from_secs(30),
            relay: false,
            relay_options: RelayOptions::default(),
            guest_log: GuestLog::Quiet,
            client: ClientOptions::default(),
            cmdline: String::new(),
            confine: true,
            tuning: Tuning::default(),
        }
    }
}

/// A QEMU version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Micro.
    pub patch: u32,
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the guest ELF says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// One past the last byte its loadable segments occupy (bss included).
    pub image_end: u64,
}

impl GuestImage {
    /// The least memory this guest boots its agent in, in MiB: everything
    /// up to the end of its image, then the agent's receive buffer and
    /// outbox and the smallest filesystem, all from the free RAM after it.
    pub fn min_memory_mib(&self) -> u32 {
        let bytes = self.image_end.next_multiple_of(GUEST_PAGE_BYTES)
            + GUEST_AGENT_RX_BYTES
            + GUEST_AGENT_OUTBOX_BYTES
            + GUEST_RAMFS_MIN_BYTES;
        u32::try_from(bytes.div_ceil(MIB)).unwrap_or(u32::MAX)
    }

    /// What the minimum is made of, for messages.
    fn needs(&self) -> String {
        format!(
            "its image ends at {} KiB, then the agent's {} KiB receive buffer, its {} KiB outbox and the smallest \
             filesystem, {} KiB",
            self.image_end.next_multiple_of(GUEST_PAGE_BYTES) / 1024,
            GUEST_AGENT_RX_BYTES.div_ceil(1024),
            GUEST_AGENT_OUTBOX_BYTES / 1024,
            GUEST_RAMFS_MIN_BYTES.div_ceil(1024)
        )
    }
}

/// A checked configuration, ready for [`crate::Sandbox::start_checked`].
#[derive(Debug, Clone)]
pub struct CheckedConfig {
    /// The configuration.
    pub config: SandboxConfig,
    /// The QEMU binary that will run it.
    pub qemu: PathBuf,
    /// Its version.
    pub qemu_version: QemuVersion,
    /// The guest ELF's bytes (its defmt table decodes the guest log).
    pub elf: Vec<u8>,
    /// What the guest file says about itself.
    pub image: GuestImage,
    /// Settings that will work, but badly (e.g. a software KVM).
    pub warnings: Vec<ConfigError>,
}

impl SandboxConfig {
    /// Checks everything that can be checked before QEMU starts. Bad
    /// settings are [`Error::Config`]; a missing or old QEMU is
    /// [`Error::Boot`].
    pub fn check(&self) -> Result<CheckedConfig> {
        let (elf, image) = read_guest(&self.guest)?;
        check_memory(self.memory_mib, &image, host_memory_mib())?;
        let mut warnings = Vec::new();
        if let Some(warning) = check_accel(self.accel, &kvm_state())? {
            warnings.push(warning);
        }
        let qemu = match &self.qemu {
            Some(q) => q.clone(),
            None => find_qemu().ok_or_else(|| {
                Error::Boot(
                    "qemu-system-x86_64 is not on PATH; install QEMU (e.g. `apt install qemu-system-x86`) or set \
                     SandboxConfig::qemu"
                        .into(),
                )
            })?,
        };
        let qemu_version = check_qemu(&qemu)?;
        Ok(CheckedConfig { config: self.clone(), qemu, qemu_version, elf, image, warnings })
    }
}

fn guest_error(path: &Path, problem: impl Into<String>) -> Error {
    Error::Config(ConfigError {
        setting: Setting::Guest,
        value: path.display().to_string(),
        problem: problem.into(),
        fix: "give the guest ELF that `cargo xtask guest` builds".into(),
    })
}

/// Reads and checks the guest file.
pub fn read_guest(path: &Path) -> Result<(Vec<u8>, GuestImage)> {
    let os = |e: std::io::Error| crate::error::os_text(&e);
    let file = std::fs::File::open(path).map_err(|e| guest_error(path, format!("cannot open it: {}", os(e))))?;
    let meta = file.metadata().map_err(|e| guest_error(path, format!("cannot read it: {}", os(e))))?;
    if !meta.is_file() {
        return Err(guest_error(path, "not a regular file"));
    }
    if meta.len() > MAX_GUEST_FILE_BYTES {
        return Err(guest_error(
            path,
            format!("{} MiB is larger than any guest (at most {} MiB)", meta.len() / MIB, MAX_GUEST_FILE_BYTES / MIB),
        ));
    }
    let mut elf = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_GUEST_FILE_BYTES)
        .read_to_end(&mut elf)
        .map_err(|e| guest_error(path, format!("cannot read it: {}", os(e))))?;
    let image =
        inspect_guest(&elf).map_err(|problem| guest_error(path, format!("not a picosandbox guest: {problem}")))?;
    Ok((elf, image))
}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Checks that `elf` is an ELF64 x86-64 executable with loadable segments
/// and the PVH entry note; returns where its image ends. The error says
/// what is missing.
pub fn inspect_guest(elf: &[u8]) -> std::result::Result<GuestImage, String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return Err("no ELF header".into());
    }
    if elf[4] != 2 {
        return Err("a 32-bit ELF, not ELF64".into());
    }
    if elf[5] != 1 {
        return Err("a big-endian ELF, not x86-64".into());
    }
    let (kind, machine) = (u16_at(elf, 16).unwrap_or(0), u16_at(elf, 18).unwrap_or(0));
    if machine != EM_X86_64 {
        return Err(format!("an ELF for machine {machine}, not x86-64 ({EM_X86_64})"));
    }
    if kind != ET_EXEC {
        return Err(format!("an ELF of type {kind}, not an executable ({ET_EXEC})"));
    }
    let phoff = u64_at(elf, 32).unwrap_or(0) as usize;
    let (phentsize, phnum) = (u16_at(elf, 54).unwrap_or(0) as usize, u16_at(elf, 56).unwrap_or(0) as usize);
    let headers = phentsize.checked_mul(phnum).and_then(|n| n.checked_add(phoff));
    if phentsize < 56 || headers.is_none_or(|end| end > elf.len()) {
        return Err("its program headers are missing or cut off".into());
    }
    let (mut image_end, mut pvh) = (None::<u64>, false);
    for i in 0..phnum {
        let h = &elf[phoff + i * phentsize..];
        let (kind, offset) = (u32_at(h, 0).unwrap_or(0), u64_at(h, 8).unwrap_or(0));
        let (paddr, filesz, memsz) =
            (u64_at(h, 24).unwrap_or(0), u64_at(h, 32).unwrap_or(0), u64_at(h, 40).unwrap_or(0));
        match kind {
            PT_LOAD => {
                let end = paddr.checked_add(memsz).ok_or("a loadable segment ends beyond 2^64")?;
                image_end = Some(image_end.map_or(end, |e| e.max(end)));
            }
            PT_NOTE => {
                let notes = usize::try_from(offset)
                    .ok()
                    .zip(usize::try_from(filesz).ok())
                    .and_then(|(o, n)| elf.get(o..o.checked_add(n)?))
                    .ok_or("a note segment lies outside the file")?;
                pvh |= has_pvh_note(notes);
            }
            _ => {}
        }
    }
    let image_end = image_end.ok_or("no loadable segment")?;
    if !pvh {
        return Err(format!("no PVH entry note (ELF note \"Xen\", type {PVH_NOTE_TYPE}), so QEMU cannot boot it"));
    }
    Ok(GuestImage { image_end })
}

/// Whether a note segment holds the PVH entry note.
fn has_pvh_note(mut notes: &[u8]) -> bool {
    let pad = |n: u32| (n as usize).next_multiple_of(4);
    while let (Some(namesz), Some(descsz), Some(kind)) = (u32_at(notes, 0), u32_at(notes, 4), u32_at(notes, 8)) {
        let name = notes.get(12..12 + namesz as usize);
        if kind == PVH_NOTE_TYPE && name == Some(b"Xen\0".as_slice()) {
            return true;
        }
        match notes.get(12 + pad(namesz) + pad(descsz)..) {
            Some(rest) => notes = rest,
            None => return false,
        }
    }
    false
}

/// The host's RAM in MiB (`MemTotal`), if known.
pub fn host_memory_mib() -> Option<u32> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    u32::try_from(kib / 1024).ok()
}

/// Checks a memory size against the guest's needs, its limit and the host's RAM.
pub fn check_memory(memory_mib: u32, image: &GuestImage, host_mib: Option<u32>) -> Result<()> {
    let min = image.min_memory_mib();
    let error = |problem: String, fix: String| {
        Err(Error::Config(ConfigError { setting: Setting::Memory, value: memory_mib.to_string(), problem, fix }))
    };
    if memory_mib < min {
        let zero = if memory_mib == 0 { " (0 would let QEMU pick its own size)" } else { "" };
        return error(
            format!("too small{zero}: the guest needs at least {min} MiB ({})", image.needs()),
            format!("give it {min} MiB or more"),
        );
    }
    if memory_mib > MAX_MEMORY_MIB {
        return error(
            format!(
                "more than the guest can use: it keeps its data in RAM below {MAX_MEMORY_MIB} MiB, where the device \
                 window starts"
            ),
            format!("give it at most {MAX_MEMORY_MIB} MiB"),
        );
    }
    match host_mib {
        Some(host) if memory_mib > host => {
            error(format!("more than this host has ({host} MiB of RAM)"), format!("give it at most {host} MiB"))
        }
        _ => Ok(()),
    }
}

/// What the host's KVM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmState {
    /// `/dev/kvm` exists.
    pub dev_kvm: bool,
    /// The loaded `kvm_*` modules (`kvm_intel`, `kvm_amd`, `kvm_pvm`, ...).
    pub modules: Vec<String>,
}

/// The hardware KVM modules: what `Accel::Auto` uses KVM with.
pub const HARDWARE_KVM_MODULES: [&str; 2] = ["kvm_intel", "kvm_amd"];

/// This host's KVM.
pub fn kvm_state() -> KvmState {
    let mut modules: Vec<String> = std::fs::read_dir("/sys/module")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|name| name.starts_with("kvm_")).collect()
        })
        .unwrap_or_default();
    modules.sort();
    KvmState { dev_kvm: Path::new("/dev/kvm").exists(), modules }
}

/// Checks a forced `Accel::Kvm`: an error without `/dev/kvm`, a warning
/// when only a software KVM module backs it (the guest runs far slower on
/// one than on TCG, which is why `Accel::Auto` avoids it).
pub fn check_accel(accel: Accel, kvm: &KvmState) -> Result<Option<ConfigError>> {
    if accel != Accel::Kvm {
        return Ok(None);
    }
    if !kvm.dev_kvm {
        return Err(Error::Config(ConfigError {
            setting: Setting::Accel,
            value: "kvm".into(),
            problem: "this host has no /dev/kvm".into(),
            fix: "use tcg, or auto to pick".into(),
        }));
    }
    if kvm.modules.iter().any(|m| HARDWARE_KVM_MODULES.contains(&m.as_str())) {
        return Ok(None);
    }
    let modules = if kvm.modules.is_empty() { "no KVM module".to_string() } else { kvm.modules.join(", ") };
    Ok(Some(ConfigError {
        setting: Setting::Accel,
        value: "kvm".into(),
        problem: format!(
            "/dev/kvm is backed by {modules}, not {} or {}: a software KVM runs this guest far slower than TCG",
            HARDWARE_KVM_MODULES[0], HARDWARE_KVM_MODULES[1]
        ),
        fix: "use auto (TCG on this host) or tcg".into(),
    }))
}

/// Versions already asked for, per binary: one `--version` per process.
static QEMU_VERSIONS: Mutex<Vec<(PathBuf, QemuVersion)>> = Mutex::new(Vec::new());

/// Checks that `qemu` runs and is at least [`MIN_QEMU_VERSION`].
pub fn check_qemu(qemu: &Path) -> Result<QemuVersion> {
    let known = lock(&QEMU_VERSIONS).iter().find(|(p, _)| p == qemu).map(|v| v.1);
    let version = match known {
        Some(v) => v,
        None => {
            let v = qemu_version(qemu)?;
            lock(&QEMU_VERSIONS).push((qemu.to_path_buf(), v));
            v
        }
    };
    if version < MIN_QEMU_VERSION {
        return Err(Error::Boot(format!(
            "QEMU {version} at {} is too old: picosandbox needs {MIN_QEMU_VERSION} or newer; install a newer QEMU",
            qemu.display()
        )));
    }
    Ok(version)
}

/// Runs `qemu --version`, bounded by [`QEMU_VERSION_TIMEOUT`].
fn qemu_version(qemu: &Path) -> Result<QemuVersion> {
    let failed = |why: String| Error::Boot(format!("cannot run {} --version: {why}", qemu.display()));
    let mut child = Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(crate::error::os_text(&e)))?;
    let deadline = Instant::now() + QEMU_VERSION_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("no answer within {QEMU_VERSION_TIMEOUT:?}")));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        return Err(failed(format!("it exited with {status}")));
    }
    parse_qemu_version(&out).ok_or_else(|| failed(format!("no version in its answer {:?}", out.trim())))
}

/// The version in `QEMU emulator version 7.2.22 (Debian ...)`.
pub fn parse_qemu_version(text: &str) -> Option<QemuVersion> {
    let rest = text.split("version ").nth(1)?;
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next()??, parts.next()??);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(QemuVersion { major, minor, patch })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 x86-64 executable: one PT_LOAD and one PT_NOTE
    /// holding `note` (name, type).
    fn elf(note: Option<(&[u8], u32)>) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 2 * 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&2u16.to_le_bytes());
        let load = 64;
        b[load..load + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[load + 24..load + 32].copy_from_slice(&GUEST_LOAD_ADDRESS.to_le_bytes());
        b[load + 40..load + 48].copy_from_slice(&(0x1c_0000u64).to_le_bytes());
        let mut notes = Vec::new();
        if let Some((name, kind)) = note {
            notes.extend((name.len() as u32).to_le_bytes());
            notes.extend(4u32.to_le_bytes());
            notes.extend(kind.to_le_bytes());
            notes.extend(name);
            notes.resize(notes.len().next_multiple_of(4), 0);
            notes.extend(0x10_0000u32.to_le_bytes());
        }
        let at = b.len() as u64;
        let ph = 64 + 56;
        b[ph..ph + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
        b[ph + 8..ph + 16].copy_from_slice(&at.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        b.extend(notes);
        b
    }

    #[test]
    fn a_guest_is_an_elf64_x86_64_executable_with_the_pvh_note() {
        let good = elf(Some((b"Xen\0", PVH_NOTE_TYPE)));
        assert_eq!(inspect_guest(&good), Ok(GuestImage { image_end: 0x2c_0000 }));
        assert_eq!(inspect_guest(b"root:x:0:0:root:/root:/bin/bash\n").unwrap_err(), "no ELF header");
        assert!(inspect_guest(&elf(None)).unwrap_err().starts_with("no PVH entry note"));
        assert!(inspect_guest(&elf(Some((b"Xen\0", 17)))).unwrap_err().starts_with("no PVH entry note"));
        assert!(inspect_guest(&elf(Some((b"GNU\0", PVH_NOTE_TYPE)))).unwrap_err().starts_with("no PVH entry note"));
        let mut b = good.clone();
        b[4] = 1;
        assert_eq!(inspect_guest(&b).unwrap_err(), "a 32-bit ELF, not ELF64");
        let mut b = good.clone();
        b[18] = 183;
        assert_eq!(inspect_guest(&b).unwrap_err(), "an ELF for machine 183, not x86-64 (62)");
        let mut b = good.clone();
        b[16] = 3;
        assert_eq!(inspect_guest(&b).unwrap_err(), "an ELF of type 3, not an executable (2)");
        let mut b = good.clone();
        b[56] = 200;
        assert_eq!(inspect_guest(&b).unwrap_err(), "its program headers are missing or cut off");
        // Every cut of a good ELF is refused without a panic.
        for len in 0..good.len() {
            assert!(inspect_guest(&good[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn memory_is_checked_at_both_bounds() {
        let image = GuestImage { image_end: 0x2c_0000 };
        // 2.75 MiB + 4 MiB + 4 B + 1 MiB + the smallest ramfs: 8 MiB.
        let min = image.min_memory_mib();
        assert_eq!(min, 8);
        assert!(check_memory(min, &image, None).is_ok());
        let e = check_memory(min - 1, &image, None).unwrap_err();
        let Error::Config(c) = &e else { panic!("{e}") };
        assert_eq!(c.setting, Setting::Memory);
        assert!(
            c.for_cli()
                .starts_with("--memory 7: too small: the guest needs at least 8 MiB (its image ends at 2816 KiB")
        );
        assert!(c.for_cli().ends_with("; give it 8 MiB or more"), "{}", c.for_cli());
        let zero = check_memory(0, &image, None).unwrap_err().to_string();
        assert!(zero.starts_with("memory_mib 0: too small (0 would let QEMU pick its own size)"), "{zero}");
        assert!(check_memory(MAX_MEMORY_MIB, &image, None).is_ok());
        let high = check_memory(MAX_MEMORY_MIB + 1, &image, None).unwrap_err().to_string();
        assert!(high.contains("below 3072 MiB") && high.ends_with("give it at most 3072 MiB"), "{high}");
        assert!(check_memory(100, &image, Some(100)).is_ok());
        let host = check_memory(101, &image, Some(100)).unwrap_err().to_string();
        assert_eq!(host, "memory_mib 101: more than this host has (100 MiB of RAM); give it at most 100 MiB");
    }

    #[test]
    fn forced_kvm_is_refused_without_dev_kvm_and_warned_about_on_a_software_module() {
        let state =
            |dev_kvm, modules: &[&str]| KvmState { dev_kvm, modules: modules.iter().map(|m| m.to_string()).collect() };
        assert_eq!(check_accel(Accel::Tcg, &state(false, &[])).unwrap(), None);
        assert_eq!(check_accel(Accel::Auto, &state(true, &["kvm_pvm"])).unwrap(), None);
        assert_eq!(check_accel(Accel::Kvm, &state(true, &["kvm_intel"])).unwrap(), None);
        let warning = check_accel(Accel::Kvm, &state(true, &["kvm_pvm"])).unwrap().unwrap().for_cli();
        assert!(
            warning.starts_with("--accel kvm: /dev/kvm is backed by kvm_pvm, not kvm_intel or kvm_amd"),
            "{warning}"
        );
        let e = check_accel(Accel::Kvm, &state(false, &[])).unwrap_err();
        assert!(
            matches!(&e, Error::Config(c) if c.for_cli() == "--accel kvm: this host has no /dev/kvm; use tcg, or auto to pick"),
            "{e}"
        );
    }

    #[test]
    fn qemu_versions_parse_and_compare() {
        let v =
            parse_qemu_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright").unwrap();
        assert_eq!(v, QemuVersion { major: 7, minor: 2, patch: 22 });
        assert!(v >= MIN_QEMU_VERSION);
        assert_eq!(
            parse_qemu_version("QEMU emulator version 8.1\n"),
            Some(QemuVersion { major: 8, minor: 1, patch: 0 })
        );
        assert!(parse_qemu_version("QEMU emulator version 7.1.9").unwrap() < MIN_QEMU_VERSION);
        assert_eq!(parse_qemu_version("nonsense"), None);
    }
}
