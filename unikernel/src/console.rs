//! The agent's console: a virtio-console (virtio-serial) port driven
//! through virtio-drivers' MMIO transport and split virtqueues, with static
//! buffers, deep queues and batched notifications, exposed as
//! `embedded_io` `Read`/`Write`/`ReadReady`/`WriteReady`.
//!
//! The agent's port is a `virtserialport`, port 1 of a multiport device,
//! not the `virtconsole` on port 0: QEMU drops console-port output that
//! the host socket cannot take at once, while a serial port stops
//! (throttles) and resumes, losing nothing. Multiport needs the control
//! queues: the driver announces itself, answers the device's "port added"
//! with "port ready" and opens the port; these messages are handled
//! whenever the console is used, so nothing at boot waits for the device.
//!
//! Receive: every receive buffer is posted at start; the device fills them
//! in order and the driver drains each filled buffer into the caller's
//! slices, re-posting it once empty and notifying once per `read`.
//! Transmit: `write` copies into as many free transmit buffers as the data
//! needs, posts them all and notifies once; they return to the free list
//! when the device has used them.
//!
//! Blocking: `read` blocks only while no byte is available, `write` only
//! while no transmit buffer is free, `flush` until the device has taken
//! every transmit buffer; they sleep with `sti; hlt` until the device's
//! interrupt. Notification suppression (`EVENT_IDX`) is not negotiated:
//! the device interrupts on every used buffer, and since the guest takes
//! interrupts only while halted, those arriving while it is busy cost one
//! pending interrupt, not one handler run each.

use core::sync::atomic::{AtomicBool, Ordering};

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use virtio_drivers::PAGE_SIZE;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

use unikernel::cpu;
use unikernel::hal::IdentityHal;
use unikernel::static_cell::StaticCell;

/// The port the agent uses: host-sync attaches its `virtserialport` as
/// `nr=1`, the first port a multiport device offers besides the console.
const AGENT_PORT: u32 = 1;
/// Queue numbers: port 0 uses 0/1, the control queues are 2/3, port `n`
/// (n >= 1) uses `2 + 2n` / `3 + 2n`.
const CONTROL_RECEIVEQ: u16 = 2;
const CONTROL_TRANSMITQ: u16 = 3;
const PORT_RECEIVEQ: u16 = 2 + 2 * AGENT_PORT as u16;
const PORT_TRANSMITQ: u16 = 3 + 2 * AGENT_PORT as u16;

/// Feature bits: `VIRTIO_F_VERSION_1` and `VIRTIO_CONSOLE_F_MULTIPORT`.
const FEATURE_VERSION_1: u64 = 1 << 32;
const FEATURE_MULTIPORT: u64 = 1 << 1;
/// Config-space offset of `max_nr_ports`.
const CONFIG_MAX_NR_PORTS: usize = 4;

/// Receive buffer size: QEMU's socket chardev passes the device at most
/// 4 KiB per read and the device fills one buffer per chunk, so larger
/// buffers would only waste their tail.
const RX_BUFFER_SIZE: usize = 4096;
/// Posted receive buffers (512 KiB): how far the host may run ahead of the
/// guest. QEMU's virtio-serial port queues hold at most 128 entries.
const RX_BUFFERS: usize = 128;
/// Transmit buffer size: the device sends each buffer with one socket
/// write, so larger buffers mean fewer host syscalls per byte.
const TX_BUFFER_SIZE: usize = 32 * 1024;
/// Transmit buffers (512 KiB) in flight at most.
const TX_BUFFERS: usize = 16;
/// Control messages from the device: an 8-byte header, plus the port name
/// for "port name" (cut to the buffer, which is harmless: names are
/// ignored). The device sends a handful per port at start.
const CONTROL_RX_BUFFER_SIZE: usize = 64;
/// Control messages to the device: 8 bytes each, at most two outstanding
/// (port ready, port open) after the initial "device ready".
const CONTROL_MESSAGE_SIZE: usize = 8;
/// Both control queues hold as many entries as the transmit queue (QEMU's
/// control queues take up to 32), more than they need: queues of one size
/// share one copy of the queue code (`VirtQueue<_, N>`, `TxRing<N>`), and
/// under emulation every copy run for the first time is translated before
/// `core.ready` (about a tenth of the console's setup).
const CONTROL_RX_BUFFERS: usize = TX_BUFFERS;
const CONTROL_TX_BUFFERS: usize = TX_BUFFERS;

/// Control events (virtio spec 5.3.6.2).
const DEVICE_READY: u16 = 0;
const DEVICE_ADD: u16 = 1;
const DEVICE_REMOVE: u16 = 2;
const PORT_READY: u16 = 3;
const PORT_OPEN: u16 = 6;

#[repr(C, align(4096))]
struct Buffers<const SIZE: usize, const COUNT: usize>([[u8; SIZE]; COUNT]);

impl<const SIZE: usize, const COUNT: usize> Buffers<SIZE, COUNT> {
    const fn new() -> Self {
        Buffers([[0; SIZE]; COUNT])
    }
}

/// Owned by the one [`Console`] (see [`CLAIMED`]): each buffer is touched
/// by the driver only while the device does not own it.
static RX_MEMORY: StaticCell<Buffers<RX_BUFFER_SIZE, RX_BUFFERS>> = StaticCell::new(Buffers::new());
static TX_MEMORY: StaticCell<Buffers<TX_BUFFER_SIZE, TX_BUFFERS>> = StaticCell::new(Buffers::new());
static CONTROL_RX_MEMORY: StaticCell<Buffers<CONTROL_RX_BUFFER_SIZE, CONTROL_RX_BUFFERS>> =
    StaticCell::new(Buffers::new());
static CONTROL_TX_MEMORY: StaticCell<Buffers<CONTROL_MESSAGE_SIZE, CONTROL_TX_BUFFERS>> =
    StaticCell::new(Buffers::new());
/// Whether a [`Console`] owns the buffers.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// A console failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum ConsoleError {
    /// A console already owns the static buffers.
    AlreadyClaimed,
    /// The device offers no multiport support, or too few ports.
    NoMultiport,
    /// The device rejected the negotiated features.
    FeaturesRejected,
    /// A virtqueue could not be set up (too small, in use, or out of ring
    /// memory).
    QueueSetup,
    /// The device returned a buffer the driver did not give it, or refused
    /// one: the link cannot be trusted any more.
    DeviceBroken,
}

impl core::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConsoleError::AlreadyClaimed => "console already claimed",
            ConsoleError::NoMultiport => "virtio-console without the agent's port",
            ConsoleError::FeaturesRejected => "virtio-console rejected the features",
            ConsoleError::QueueSetup => "virtqueue setup failed",
            ConsoleError::DeviceBroken => "virtio-console device misbehaved",
        })
    }
}

impl core::error::Error for ConsoleError {}

impl embedded_io::Error for ConsoleError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// A device-writable queue with one buffer per descriptor, all posted.
struct RxRing<const N: usize> {
    queue: VirtQueue<IdentityHal, N>,
    /// `N` buffers of `buffer_size` bytes, owned by this ring.
    memory: *mut u8,
    buffer_size: usize,
    /// The buffer posted under each descriptor token.
    slot_of_token: [u16; N],
}

impl<const N: usize> RxRing<N> {
    /// # Safety
    ///
    /// `memory` must point at `N * buffer_size` bytes that nothing else
    /// uses for the ring's lifetime.
    unsafe fn new(queue: VirtQueue<IdentityHal, N>, memory: *mut u8, buffer_size: usize) -> Self {
        RxRing { queue, memory, buffer_size, slot_of_token: [0; N] }
    }

    fn buffer(&self, slot: usize) -> *mut u8 {
        assert!(slot < N, "buffer slot out of the ring");
        // SAFETY: `slot < N` (asserted), so the offset stays inside the
        // ring's memory of N buffers.
        unsafe { self.memory.add(slot * self.buffer_size) }
    }

    /// Gives buffer `slot` (owned by the driver) to the device.
    fn post(&mut self, slot: usize) -> Result<(), ConsoleError> {
        // SAFETY: the driver owns `slot` (never posted, or popped and
        // drained); it stays untouched until `pop_used` returns it.
        let buffer = unsafe { core::slice::from_raw_parts_mut(self.buffer(slot), self.buffer_size) };
        // SAFETY: as above; the memory outlives the queue.
        let token = unsafe { self.queue.add(&[], &mut [buffer]) }.map_err(|_| ConsoleError::DeviceBroken)?;
        self.slot_of_token[usize::from(token)] = slot as u16;
        Ok(())
    }

    fn post_all(&mut self) -> Result<(), ConsoleError> {
        (0..N).try_for_each(|slot| self.post(slot))
    }

    /// The next buffer the device filled, as `(slot, length)`; the driver
    /// owns it until it posts it again.
    fn pop(&mut self) -> Result<Option<(usize, usize)>, ConsoleError> {
        let Some(token) = self.queue.peek_used() else { return Ok(None) };
        let slot = usize::from(*self.slot_of_token.get(usize::from(token)).ok_or(ConsoleError::DeviceBroken)?);
        // SAFETY: `slot` was posted under `token` (recorded by `post`).
        let buffer = unsafe { core::slice::from_raw_parts_mut(self.buffer(slot), self.buffer_size) };
        // SAFETY: the same single buffer that was added under `token`.
        let len = unsafe { self.queue.pop_used(token, &[], &mut [buffer]) }.map_err(|_| ConsoleError::DeviceBroken)?;
        Ok(Some((slot, (len as usize).min(self.buffer_size))))
    }
}

/// A driver-written queue with a free list of buffers.
struct TxRing<const N: usize> {
    queue: VirtQueue<IdentityHal, N>,
    /// `N` buffers of `buffer_size` bytes, owned by this ring.
    memory: *mut u8,
    buffer_size: usize,
    /// The buffer posted under each descriptor token, and its length.
    slot_of_token: [u16; N],
    len: [u32; N],
    /// Free buffers: a stack of slot numbers.
    free: [u16; N],
    free_count: usize,
}

impl<const N: usize> TxRing<N> {
    /// # Safety
    ///
    /// As for [`RxRing::new`].
    unsafe fn new(queue: VirtQueue<IdentityHal, N>, memory: *mut u8, buffer_size: usize) -> Self {
        TxRing {
            queue,
            memory,
            buffer_size,
            slot_of_token: [0; N],
            len: [0; N],
            free: core::array::from_fn(|slot| slot as u16),
            free_count: N,
        }
    }

    fn buffer(&self, slot: usize) -> *mut u8 {
        assert!(slot < N, "buffer slot out of the ring");
        // SAFETY: `slot < N` (asserted), so the offset stays inside the
        // ring's memory of N buffers.
        unsafe { self.memory.add(slot * self.buffer_size) }
    }

    /// Returns the buffers the device has finished with to the free list.
    fn reclaim(&mut self) -> Result<(), ConsoleError> {
        while let Some(token) = self.queue.peek_used() {
            let slot = usize::from(*self.slot_of_token.get(usize::from(token)).ok_or(ConsoleError::DeviceBroken)?);
            // SAFETY: `slot` was posted under `token` with `len[slot]` bytes.
            let buffer = unsafe { core::slice::from_raw_parts(self.buffer(slot), self.len[slot] as usize) };
            // SAFETY: the same single buffer that was added under `token`.
            unsafe { self.queue.pop_used(token, &[buffer], &mut []) }.map_err(|_| ConsoleError::DeviceBroken)?;
            *self.free.get_mut(self.free_count).ok_or(ConsoleError::DeviceBroken)? = slot as u16;
            self.free_count += 1;
        }
        Ok(())
    }

    /// Copies as much of `data` as the free buffers hold and posts them;
    /// returns the bytes taken. The caller notifies the device.
    fn send(&mut self, data: &[u8]) -> Result<usize, ConsoleError> {
        let mut sent = 0;
        while sent < data.len() && self.free_count > 0 {
            let slot = usize::from(self.free[self.free_count - 1]);
            let n = (data.len() - sent).min(self.buffer_size);
            // SAFETY: the driver owns free buffer `slot`; `n` fits in it.
            let buffer = unsafe {
                let buffer = core::slice::from_raw_parts_mut(self.buffer(slot), n);
                buffer.copy_from_slice(&data[sent..sent + n]);
                &*buffer
            };
            // SAFETY: the buffer is static and untouched until popped.
            let token = unsafe { self.queue.add(&[buffer], &mut []) }.map_err(|_| ConsoleError::DeviceBroken)?;
            self.free_count -= 1;
            self.slot_of_token[usize::from(token)] = slot as u16;
            self.len[slot] = n as u32;
            sent += n;
        }
        Ok(sent)
    }

    /// Whether the device holds none of the buffers.
    fn idle(&self) -> bool {
        self.free_count == N
    }
}

/// A filled receive buffer being drained.
#[derive(Clone, Copy)]
struct Filled {
    slot: usize,
    len: usize,
    offset: usize,
}

/// The agent port's setup, driven by the device's control messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
enum PortSetup {
    /// Waiting for the device to add the port.
    AwaitingAdd,
    /// Added: "port ready" is to be sent.
    SendReady,
    /// "Port open" (guest side) is to be sent.
    SendOpen,
    /// Open.
    Open,
}

/// The virtio-console driver for the agent's port.
pub struct Console {
    transport: MmioTransport<'static>,
    rx: RxRing<RX_BUFFERS>,
    tx: TxRing<TX_BUFFERS>,
    control_rx: RxRing<CONTROL_RX_BUFFERS>,
    control_tx: TxRing<CONTROL_TX_BUFFERS>,
    /// The receive buffer being drained, if any.
    filled: Option<Filled>,
    /// How far the agent port's setup has come.
    port: PortSetup,
}

impl Console {
    /// Initialises the device behind `transport`, sets up the control and
    /// agent-port queues, posts every receive buffer and announces the
    /// driver. Takes ownership of the static buffers (once per boot).
    pub fn new(mut transport: MmioTransport<'static>) -> Result<Console, ConsoleError> {
        if CLAIMED.swap(true, Ordering::AcqRel) {
            return Err(ConsoleError::AlreadyClaimed);
        }
        negotiate(&mut transport)?;
        let control_rx = queue(&mut transport, CONTROL_RECEIVEQ)?;
        let control_tx = queue(&mut transport, CONTROL_TRANSMITQ)?;
        let rx = queue(&mut transport, PORT_RECEIVEQ)?;
        let tx = queue(&mut transport, PORT_TRANSMITQ)?;
        transport.finish_init();
        // SAFETY: each ring gets its own static buffers, claimed above for
        // this console alone, of exactly `N * buffer_size` bytes.
        let mut console = unsafe {
            Console {
                transport,
                rx: RxRing::new(rx, RX_MEMORY.get().cast(), RX_BUFFER_SIZE),
                tx: TxRing::new(tx, TX_MEMORY.get().cast(), TX_BUFFER_SIZE),
                control_rx: RxRing::new(control_rx, CONTROL_RX_MEMORY.get().cast(), CONTROL_RX_BUFFER_SIZE),
                control_tx: TxRing::new(control_tx, CONTROL_TX_MEMORY.get().cast(), CONTROL_MESSAGE_SIZE),
                filled: None,
                port: PortSetup::AwaitingAdd,
            }
        };
        console.control_rx.post_all()?;
        console.transport.notify(CONTROL_RECEIVEQ);
        console.rx.post_all()?;
        console.transport.notify(PORT_RECEIVEQ);
        console.send_control(0, DEVICE_READY, 1)?;
        console.poll_control()?;
        Ok(console)
    }

    /// Sends one control message; `false` if no control buffer was free.
    fn send_control(&mut self, id: u32, event: u16, value: u16) -> Result<bool, ConsoleError> {
        self.control_tx.reclaim()?;
        let mut message = [0u8; CONTROL_MESSAGE_SIZE];
        message[..4].copy_from_slice(&id.to_le_bytes());
        message[4..6].copy_from_slice(&event.to_le_bytes());
        message[6..].copy_from_slice(&value.to_le_bytes());
        if self.control_tx.send(&message)? == 0 {
            return Ok(false);
        }
        self.transport.notify(CONTROL_TRANSMITQ);
        Ok(true)
    }

    /// Handles the device's control messages and sends the replies the
    /// port setup needs. Cheap when there is nothing to do.
    fn poll_control(&mut self) -> Result<(), ConsoleError> {
        let mut reposted = false;
        while let Some((slot, len)) = self.control_rx.pop()? {
            if len >= CONTROL_MESSAGE_SIZE {
                // SAFETY: the driver owns the popped buffer; `len` bytes
                // were written and at least 8 are read.
                let m = unsafe { core::slice::from_raw_parts(self.control_rx.buffer(slot), CONTROL_MESSAGE_SIZE) };
                let id = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
                self.on_control(id, u16::from_le_bytes([m[4], m[5]]), u16::from_le_bytes([m[6], m[7]]));
            }
            self.control_rx.post(slot)?;
            reposted = true;
        }
        if reposted {
            self.transport.notify(CONTROL_RECEIVEQ);
        }
        if self.port == PortSetup::SendReady && self.send_control(AGENT_PORT, PORT_READY, 1)? {
            self.port = PortSetup::SendOpen;
        }
        if self.port == PortSetup::SendOpen && self.send_control(AGENT_PORT, PORT_OPEN, 1)? {
            self.port = PortSetup::Open;
            defmt::debug!("agent port open");
            // The device only starts reading the host once the port is open
            // and it is told about posted receive buffers.
            self.transport.notify(PORT_RECEIVEQ);
        }
        Ok(())
    }

    fn on_control(&mut self, id: u32, event: u16, value: u16) {
        match event {
            DEVICE_ADD if id == AGENT_PORT && self.port == PortSetup::AwaitingAdd => self.port = PortSetup::SendReady,
            DEVICE_ADD if id != AGENT_PORT => {
                defmt::warn!("ignoring port {=u32}: the agent uses port {=u32}", id, AGENT_PORT)
            }
            DEVICE_REMOVE if id == AGENT_PORT => defmt::warn!("the agent port was removed"),
            PORT_OPEN if id == AGENT_PORT => defmt::debug!("host side of the agent port: open={=u16}", value),
            _ => defmt::trace!("control message: port {=u32}, event {=u16}, value {=u16}", id, event, value),
        }
    }

    /// Copies what has arrived into `out` without blocking; re-posts the
    /// buffers it empties and notifies the device once.
    fn read_available(&mut self, out: &mut [u8]) -> Result<usize, ConsoleError> {
        let mut copied = 0;
        let mut reposted = false;
        while copied < out.len() {
            let filled = match self.filled.take() {
                Some(filled) => filled,
                None => match self.rx.pop()? {
                    Some((slot, len)) => Filled { slot, len, offset: 0 },
                    None => break,
                },
            };
            let n = (filled.len - filled.offset).min(out.len() - copied);
            // SAFETY: the driver owns `filled.slot` (popped, not re-posted);
            // `offset + n <= len <= RX_BUFFER_SIZE`.
            let source = unsafe { core::slice::from_raw_parts(self.rx.buffer(filled.slot).add(filled.offset), n) };
            out[copied..copied + n].copy_from_slice(source);
            copied += n;
            if filled.offset + n == filled.len {
                self.rx.post(filled.slot)?;
                reposted = true;
            } else {
                self.filled = Some(Filled { offset: filled.offset + n, ..filled });
            }
        }
        if reposted && self.rx.queue.should_notify() {
            self.transport.notify(PORT_RECEIVEQ);
        }
        Ok(copied)
    }

    /// Copies as much of `data` as the free transmit buffers hold, posts
    /// them and notifies the device once. Never blocks.
    fn write_available(&mut self, data: &[u8]) -> Result<usize, ConsoleError> {
        self.tx.reclaim()?;
        let sent = self.tx.send(data)?;
        if sent > 0 && self.tx.queue.should_notify() {
            self.transport.notify(PORT_TRANSMITQ);
        }
        Ok(sent)
    }
}

/// Sets up virtqueue `index` with `N` entries (no indirect descriptors, no
/// event-index suppression).
fn queue<const N: usize>(
    transport: &mut MmioTransport<'static>,
    index: u16,
) -> Result<VirtQueue<IdentityHal, N>, ConsoleError> {
    VirtQueue::new(transport, index, false, false).map_err(|_| ConsoleError::QueueSetup)
}

/// Feature negotiation (virtio 3.1.1): version 1 if offered, and
/// multiport, which the agent's port needs.
fn negotiate(transport: &mut MmioTransport<'static>) -> Result<(), ConsoleError> {
    transport.set_status(DeviceStatus::empty());
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let offered = transport.read_device_features();
    let max_ports: u32 = transport.read_config_space(CONFIG_MAX_NR_PORTS).unwrap_or(0);
    if offered & FEATURE_MULTIPORT == 0 || max_ports <= AGENT_PORT {
        return Err(ConsoleError::NoMultiport);
    }
    transport.write_driver_features(offered & (FEATURE_VERSION_1 | FEATURE_MULTIPORT));
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
        return Err(ConsoleError::FeaturesRejected);
    }
    transport.set_guest_page_size(PAGE_SIZE as u32);
    Ok(())
}

impl ErrorType for Console {
    type Error = ConsoleError;
}

impl Read for Console {
    /// Returns as soon as at least one byte is available (as many as are,
    /// up to `buf.len()`); sleeps only while nothing is.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            self.poll_control()?;
            let n = self.read_available(buf)?;
            if n > 0 {
                return Ok(n);
            }
            cpu::wait_for_interrupt();
        }
    }
}

impl ReadReady for Console {
    fn read_ready(&mut self) -> Result<bool, ConsoleError> {
        self.poll_control()?;
        Ok(self.filled.is_some() || self.rx.queue.can_pop())
    }
}

impl Write for Console {
    /// Accepts as much as the free transmit buffers hold (at least one
    /// byte); sleeps only while none is free.
    fn write(&mut self, buf: &[u8]) -> Result<usize, ConsoleError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            self.poll_control()?;
            let n = self.write_available(buf)?;
            if n > 0 {
                return Ok(n);
            }
            cpu::wait_for_interrupt();
        }
    }

    /// Waits until the device has taken every transmit buffer.
    fn flush(&mut self) -> Result<(), ConsoleError> {
        loop {
            self.poll_control()?;
            self.tx.reclaim()?;
            if self.tx.idle() {
                return Ok(());
            }
            cpu::wait_for_interrupt();
        }
    }
}

impl WriteReady for Console {
    fn write_ready(&mut self) -> Result<bool, ConsoleError> {
        self.poll_control()?;
        self.tx.reclaim()?;
        Ok(self.tx.free_count > 0)
    }
}
