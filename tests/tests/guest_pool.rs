//! `SandboxPool` against the real guest: it fills, hands out a working
//! sandbox, refills behind it, never hands out a used one, kills every QEMU
//! it holds when dropped, and reports a guest that cannot boot at
//! `acquire`.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use host_sync::pool::{PoolConfig, PoolError, SandboxPool};
use host_sync::{Error, SandboxConfig};
use tests::guest;

/// How long a pool may take to fill (TCG boots on a shared, busy machine).
const FILL_TIMEOUT: Duration = Duration::from_secs(120);

fn one_pool() -> MutexGuard<'static, ()> {
    static POOL: Mutex<()> = Mutex::new(());
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

fn pool(size: usize) -> SandboxPool {
    let mut sandbox = SandboxConfig::new(guest::elf_path());
    sandbox.memory_mib = 64;
    let config = PoolConfig { sandbox, size, max_booting: 1 };
    SandboxPool::new(config).expect("a pool")
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn acquire_release_refill_and_nothing_is_reused() {
    let _one = one_pool();
    let pool = pool(2);
    assert_eq!(pool.wait_ready(2, FILL_TIMEOUT), 2);
    let first_pids = pool.ready_pids();
    assert_eq!(pool.stats().booting, 0, "a full pool boots nothing");

    let a = pool.acquire(Duration::ZERO).expect("a ready sandbox, without waiting");
    assert!(first_pids.contains(&a.pid()));
    a.fs().write("/secret.txt", "user a's data").expect("a write");
    assert_eq!(a.fs().read_to_string("/secret.txt").unwrap(), "user a's data");
    let a_pid = a.pid();
    pool.release(a);
    assert!(!alive(a_pid), "a released sandbox's QEMU is gone");

    // The pool refills to its size with a fresh sandbox.
    assert_eq!(pool.wait_ready(2, FILL_TIMEOUT), 2);
    let stats = pool.stats();
    assert_eq!((stats.handed_out, stats.booted, stats.failed), (1, 3, 0));
    assert!(!pool.ready_pids().contains(&a_pid));

    // Neither of the next two ever saw user a's file.
    for _ in 0..2 {
        let b = pool.acquire(FILL_TIMEOUT).expect("a sandbox");
        assert_ne!(b.pid(), a_pid);
        let e = b.fs().stat("/secret.txt").expect_err("a fresh sandbox has no file of another user");
        assert!(matches!(e, Error::Fs { .. }), "{e}");
    }
}

#[test]
fn dropping_the_pool_kills_every_qemu() {
    let _one = one_pool();
    let pool = pool(3);
    assert_eq!(pool.wait_ready(3, FILL_TIMEOUT), 3);
    let pids = pool.ready_pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| alive(p)));
    // One handed out is the caller's: it outlives the pool.
    let kept = pool.acquire(Duration::ZERO).expect("a sandbox");
    drop(pool);
    for pid in pids.iter().filter(|&&p| p != kept.pid()) {
        assert!(!alive(*pid), "QEMU {pid} outlived the pool");
    }
    kept.fs().stat("/").expect("the handed-out sandbox still serves");
    let kept_pid = kept.pid();
    drop(kept);
    assert!(!alive(kept_pid));
}

#[test]
fn a_guest_that_cannot_boot_is_reported_at_acquire() {
    let _one = one_pool();
    // The boot floor passes every check (an ELF with the PVH note) but
    // never sends core.ready.
    let mut sandbox = SandboxConfig::new(guest::floor_elf_path());
    sandbox.memory_mib = 64;
    sandbox.boot_timeout = Duration::from_secs(2);
    let pool = SandboxPool::new(PoolConfig { sandbox, size: 2, max_booting: 1 }).expect("the settings pass");
    match pool.acquire(FILL_TIMEOUT) {
        Err(PoolError::Refill { failures, error, .. }) => {
            assert!(failures >= 1);
            let text = error.to_string();
            assert!(text.contains("no core.ready within 2s"), "{text}");
        }
        Err(other) => panic!("expected a refill error, got {other}"),
        Ok(_) => panic!("the floor guest cannot serve"),
    }
    let stats = pool.stats();
    assert_eq!((stats.ready, stats.booted), (0, 0));
    assert!(stats.failed >= 1);
    // After a failure, retries are one at a time.
    assert!(stats.booting <= 1);
}
