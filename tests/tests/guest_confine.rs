//! QEMU's confinement, against the real guest: a sandbox's QEMU runs under
//! its seccomp filter by default, still boots and serves, and holds no
//! descriptor of its owner beyond its standard input, output and error
//! (a descriptor the owner opened without `O_CLOEXEC` does not reach it).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use host_sync::qemu::{SeccompPolicy, find_qemu, seccomp_support};
use host_sync::{Sandbox, SandboxConfig};
use tests::guest;

fn one_qemu() -> MutexGuard<'static, ()> {
    static QEMU: Mutex<()> = Mutex::new(());
    QEMU.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `Seccomp:` mode of a process (0 none, 2 filter).
fn seccomp_mode(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading the process status");
    let line = status.lines().find(|l| l.starts_with("Seccomp:")).expect("a Seccomp line");
    line["Seccomp:".len()..].trim().parse().expect("a number")
}

/// Where each of a process's descriptors points.
fn descriptors(pid: u32) -> Vec<(u32, PathBuf)> {
    let mut fds: Vec<(u32, PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("listing the descriptors")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, std::fs::read_link(e.path()).ok()?))
        })
        .collect();
    fds.sort();
    fds
}

/// A descriptor on a fresh file, inheritable (no `O_CLOEXEC`).
fn inheritable_file(path: &std::path::Path) -> OwnedFd {
    let file = std::fs::File::create(path).expect("creating the marker file");
    let fd = OwnedFd::from(file);
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty()).expect("clearing FD_CLOEXEC");
    fd
}

#[test]
fn a_confined_qemu_boots_serves_and_holds_only_its_own_descriptors() {
    let _one = one_qemu();
    let qemu = find_qemu().expect("qemu-system-x86_64 on PATH");
    // The installed QEMU (7.2 here) knows every class: the policy is the full one.
    assert_eq!(seccomp_support(&qemu), Ok(SeccompPolicy::full()));
    let marker = std::env::temp_dir().join(format!("picosandbox-fd-marker-{}", std::process::id()));
    let leaked = inheritable_file(&marker);
    let config = SandboxConfig::new(guest::elf_path());
    assert!(config.confine, "confinement is on by default");
    let sandbox = Sandbox::start(config).expect("a confined guest boots");
    assert_eq!(sandbox.seccomp(), Some(&SeccompPolicy::full()));
    assert_eq!(seccomp_mode(sandbox.pid()), 2, "QEMU runs under a seccomp filter");
    // It serves.
    sandbox.fs().write("/confined.txt", "still works").expect("a write");
    assert_eq!(sandbox.fs().read_to_string("/confined.txt").expect("a read"), "still works");
    let fds = descriptors(sandbox.pid());
    assert!(
        fds.iter().all(|(_, target)| target != &marker),
        "the inheritable descriptor {} reached QEMU: {fds:?}",
        leaked.as_raw_fd()
    );
    // 0 and 1 are /dev/null, 2 the stderr pipe; everything else QEMU opened
    // itself: its sockets, event and signal descriptors, no file of ours.
    assert_eq!(fds[0], (0, PathBuf::from("/dev/null")));
    assert_eq!(fds[1], (1, PathBuf::from("/dev/null")));
    assert!(fds[2].0 == 2 && fds[2].1.to_string_lossy().starts_with("pipe:"), "{fds:?}");
    for (fd, target) in &fds[3..] {
        let t = target.to_string_lossy();
        assert!(
            t.starts_with("socket:") || t.starts_with("anon_inode:") || t.starts_with("pipe:") || t == "/dev/urandom",
            "QEMU holds descriptor {fd} on {t}: {fds:?}"
        );
    }
    let status = sandbox.shutdown(Duration::from_secs(10)).expect("a clean shutdown");
    assert!(status.success(), "{status}");
    drop(leaked);
    let _ = std::fs::remove_file(marker);
}

#[test]
fn confinement_can_be_turned_off() {
    let _one = one_qemu();
    let mut config = SandboxConfig::new(guest::elf_path());
    config.confine = false;
    let sandbox = Sandbox::start(config).expect("the guest boots");
    assert_eq!(sandbox.seccomp(), None);
    assert_eq!(seccomp_mode(sandbox.pid()), 0, "QEMU runs without a filter");
    sandbox.fs().stat("/").expect("it serves");
}
