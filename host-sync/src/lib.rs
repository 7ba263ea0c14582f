//! `host-sync`: boot, drive and share a picosandbox guest from blocking Rust.

pub mod cli;
pub mod client;
mod conn;
pub mod error;
pub mod fs;
pub mod guest_log;
pub mod proto;
pub mod qemu;
pub mod relay;
pub mod sandbox;

pub use client::{Client, ClientOptions};
pub use error::{Error, Result};
pub use fs::{Entry, EntryKind, Fs};
pub use guest_log::GuestLog;
pub use qemu::Accel;
pub use relay::Relay;
pub use sandbox::{BootTimes, Sandbox, SandboxConfig};
