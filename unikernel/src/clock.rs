//! Monotonic time from the TSC, and the LAPIC timer's rate for deadlines.
//!
//! The TSC frequency comes from CPUID when the CPU or hypervisor reports
//! it (hypervisor leaf 0x40000010, which also gives the LAPIC rate, or
//! leaf 0x15). QEMU's TCG reports neither, and microvm has no PIT, HPET,
//! RTC or ACPI PM timer, so the guest measures the TSC against the LAPIC
//! timer, whose rate QEMU fixes at 1 GHz (one count per nanosecond of its
//! virtual clock at divide-by-1; KVM's in-kernel LAPIC uses the same
//! rate). The measurement runs while the devices initialise: it starts
//! first thing at boot and ends after device setup, lasting at least
//! [`CALIBRATION_MIN_NS`]. Each end is a TSC read bracketed by two LAPIC
//! count reads, so its error is at most half the bracket.

use core::sync::atomic::{AtomicU64, Ordering};

use agent_core::driver::Clock;

use crate::{apic, cpu};

/// QEMU's LAPIC timer rate at divide-by-1 (its APIC bus cycle is 1 ns).
const QEMU_LAPIC_HZ: u64 = 1_000_000_000;
/// The shortest calibration window. Each end's bracket is well under a
/// microsecond under TCG; across boots the result spreads by about
/// +-10 ppm at 2 ms (+-2 ppm at 5 ms), which is what a 2 ms longer boot
/// would buy.
const CALIBRATION_MIN_NS: u64 = 500_000;
/// TSC ticks after which calibration gives up on a LAPIC timer that does
/// not count (seconds at any plausible TSC rate) instead of hanging.
const CALIBRATION_TSC_LIMIT: u64 = 1 << 36;
/// Attempts to get a tight bracket around one TSC read, and the widest
/// bracket (in LAPIC ticks = ns) accepted without retrying.
const BRACKET_ATTEMPTS: usize = 8;
const BRACKET_TIGHT_TICKS: u32 = 500;

/// Fixed-point scale (2^32) of the conversion factors.
const FRACTION_BITS: u32 = 32;
const NS_PER_SECOND: u128 = 1_000_000_000;

/// The CPUID leaves consulted.
const HYPERVISOR_BASE_LEAF: u32 = 0x4000_0000;
const HYPERVISOR_TIMING_LEAF: u32 = 0x4000_0010;
const TSC_CRYSTAL_LEAF: u32 = 0x15;

/// TSC at boot and ns-per-TSC-tick (fixed point) for the log timestamp;
/// zero until calibrated.
static LOG_TSC_ORIGIN: AtomicU64 = AtomicU64::new(0);
static LOG_NS_PER_TSC: AtomicU64 = AtomicU64::new(0);

/// Microseconds since boot for log timestamps (0 before calibration).
pub fn uptime_us() -> u64 {
    let scale = LOG_NS_PER_TSC.load(Ordering::Relaxed);
    let elapsed = cpu::rdtsc().wrapping_sub(LOG_TSC_ORIGIN.load(Ordering::Relaxed));
    (((u128::from(elapsed) * u128::from(scale)) >> FRACTION_BITS) / 1000) as u64
}

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum TscSource {
    /// CPUID leaf 0x40000010 (hypervisor timing information).
    HypervisorLeaf,
    /// CPUID leaf 0x15 (crystal clock ratio).
    CrystalLeaf,
    /// Measured against QEMU's 1 GHz LAPIC timer.
    LapicCalibration,
}

/// One TSC read and the LAPIC count at the same moment.
#[derive(Clone, Copy)]
struct Sample {
    tsc: u64,
    /// LAPIC ticks elapsed since the count started (it counts down).
    lapic_elapsed: u64,
}

fn sample() -> Sample {
    let mut best: Option<(u32, Sample)> = None;
    for _ in 0..BRACKET_ATTEMPTS {
        let before = apic::timer_current();
        let tsc = cpu::rdtsc();
        let after = apic::timer_current();
        let bracket = before.saturating_sub(after);
        let elapsed = u32::MAX - before.saturating_sub(bracket / 2);
        let candidate = Sample { tsc, lapic_elapsed: u64::from(elapsed) };
        if best.is_none_or(|(width, _)| bracket < width) {
            best = Some((bracket, candidate));
        }
        if bracket <= BRACKET_TIGHT_TICKS {
            break;
        }
    }
    best.map_or(Sample { tsc: cpu::rdtsc(), lapic_elapsed: 0 }, |(_, s)| s)
}

/// A calibration in progress: the LAPIC timer counts down freely from its
/// maximum (4.3 s at 1 GHz, far longer than boot).
pub struct Calibration {
    start: Sample,
}

/// Starts measuring (call first thing at boot, LAPIC initialised).
pub fn start_calibration() -> Calibration {
    apic::start_free_running(u32::MAX);
    Calibration { start: sample() }
}

/// The conversions between TSC ticks, nanoseconds and LAPIC ticks.
#[derive(Clone, Copy)]
pub struct Timebase {
    tsc_origin: u64,
    ns_per_tsc: u64,
    lapic_per_ns: u64,
    tsc_hz: u64,
    lapic_hz: u64,
    source: TscSource,
}

impl Calibration {
    /// Ends the measurement (waiting until it is long enough) and builds
    /// the timebase, with `tsc_origin` as time zero.
    pub fn finish(self, tsc_origin: u64) -> Timebase {
        let min_ticks = CALIBRATION_MIN_NS * QEMU_LAPIC_HZ / NS_PER_SECOND as u64;
        let mut end = sample();
        while end.lapic_elapsed.saturating_sub(self.start.lapic_elapsed) < min_ticks {
            if end.tsc.wrapping_sub(self.start.tsc) > CALIBRATION_TSC_LIMIT {
                defmt::error!("the LAPIC timer does not count: the clock is unreliable");
                break;
            }
            core::hint::spin_loop();
            end = sample();
        }
        let tsc_ticks = end.tsc.wrapping_sub(self.start.tsc).max(1);
        let lapic_ticks = end.lapic_elapsed.saturating_sub(self.start.lapic_elapsed).max(1);
        let ratio = |hz: u64, num: u64, den: u64| (u128::from(hz) * u128::from(num) / u128::from(den)) as u64;
        let (tsc_hz, lapic_hz, source) = match reported_frequencies() {
            Some((tsc_hz, Some(lapic_hz), source)) => (tsc_hz, lapic_hz, source),
            Some((tsc_hz, None, source)) => (tsc_hz, ratio(tsc_hz, lapic_ticks, tsc_ticks), source),
            None => (ratio(QEMU_LAPIC_HZ, tsc_ticks, lapic_ticks), QEMU_LAPIC_HZ, TscSource::LapicCalibration),
        };
        let timebase = Timebase::new(tsc_origin, tsc_hz.max(1), lapic_hz.max(1), source);
        apic::arm_one_shot(0);
        LOG_TSC_ORIGIN.store(tsc_origin, Ordering::Relaxed);
        LOG_NS_PER_TSC.store(timebase.ns_per_tsc, Ordering::Relaxed);
        timebase
    }
}

/// The TSC frequency (and the LAPIC's, if known) as CPUID reports them.
fn reported_frequencies() -> Option<(u64, Option<u64>, TscSource)> {
    let hypervisor_max = cpu::cpuid(HYPERVISOR_BASE_LEAF, 0).eax;
    if cpu::cpuid(1, 0).ecx & (1 << 31) != 0 && hypervisor_max >= HYPERVISOR_TIMING_LEAF {
        let timing = cpu::cpuid(HYPERVISOR_TIMING_LEAF, 0);
        if timing.eax != 0 {
            let lapic_hz = (timing.ebx != 0).then(|| u64::from(timing.ebx) * 1000);
            return Some((u64::from(timing.eax) * 1000, lapic_hz, TscSource::HypervisorLeaf));
        }
    }
    if cpu::cpuid(0, 0).eax >= TSC_CRYSTAL_LEAF {
        let crystal = cpu::cpuid(TSC_CRYSTAL_LEAF, 0);
        if crystal.eax != 0 && crystal.ebx != 0 && crystal.ecx != 0 {
            let tsc_hz = u64::from(crystal.ecx) * u64::from(crystal.ebx) / u64::from(crystal.eax);
            return Some((tsc_hz, None, TscSource::CrystalLeaf));
        }
    }
    None
}

impl Timebase {
    fn new(tsc_origin: u64, tsc_hz: u64, lapic_hz: u64, source: TscSource) -> Self {
        let ns_per_tsc = ((NS_PER_SECOND << FRACTION_BITS) / u128::from(tsc_hz)) as u64;
        let lapic_per_ns = ((u128::from(lapic_hz) << FRACTION_BITS) / NS_PER_SECOND) as u64;
        Timebase { tsc_origin, ns_per_tsc, lapic_per_ns, tsc_hz, lapic_hz, source }
    }

    /// Nanoseconds since `tsc_origin`.
    pub fn now_ns(&self) -> u64 {
        self.ns_from_tsc(cpu::rdtsc())
    }

    /// Nanoseconds from this timebase's origin to TSC value `tsc`.
    pub fn ns_from_tsc(&self, tsc: u64) -> u64 {
        let elapsed = tsc.wrapping_sub(self.tsc_origin);
        ((u128::from(elapsed) * u128::from(self.ns_per_tsc)) >> FRACTION_BITS) as u64
    }

    /// LAPIC timer ticks (divide-by-1) in `ns` nanoseconds.
    pub fn lapic_ticks(&self, ns: u64) -> u64 {
        ((u128::from(ns) * u128::from(self.lapic_per_ns)) >> FRACTION_BITS) as u64
    }

    /// The TSC frequency in Hz.
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// The LAPIC timer frequency in Hz (divide-by-1).
    pub fn lapic_hz(&self) -> u64 {
        self.lapic_hz
    }

    /// Where the TSC frequency came from.
    pub fn source(&self) -> TscSource {
        self.source
    }
}

/// The agent's clock: the TSC timebase plus a wall-clock offset the host
/// sets.
pub struct TscClock {
    timebase: Timebase,
    /// Unix ns minus monotonic ns, once set (wrapping arithmetic).
    wall_offset_ns: Option<u64>,
}

impl TscClock {
    /// A clock over `timebase`, with no wall clock yet.
    pub fn new(timebase: Timebase) -> Self {
        TscClock { timebase, wall_offset_ns: None }
    }
}

impl Clock for TscClock {
    fn monotonic_ns(&self) -> u64 {
        self.timebase.now_ns()
    }

    fn set_wall_clock_ns(&mut self, unix_ns: u64) {
        self.wall_offset_ns = Some(unix_ns.wrapping_sub(self.timebase.now_ns()));
    }

    fn wall_clock_ns(&self) -> Option<u64> {
        self.wall_offset_ns.map(|offset| self.timebase.now_ns().wrapping_add(offset))
    }
}
