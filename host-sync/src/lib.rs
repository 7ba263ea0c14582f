//! `host-sync`: boot, drive and share a picosandbox guest from blocking Rust.

pub mod cancel;
pub mod cli;
pub mod client;
pub mod complete;
pub mod config;
mod conn;
pub mod error;
pub mod format;
pub mod fs;
pub mod guest_log;
pub mod local;
pub mod pool;
pub mod proto;
pub mod qemu;
pub mod relay;
pub mod relay_core;
pub mod sandbox;
pub mod shell;
mod sync;

pub use client::{Client, ClientOptions};
pub use config::{CheckedConfig, ConfigError, SandboxConfig};
pub use error::{Error, Result};
pub use fs::{Entry, EntryKind, File, Fs, OpenOptions, ReadDir};
pub use guest_log::GuestLog;
pub use pool::{PoolConfig, PoolError, SandboxPool};
pub use qemu::Accel;
pub use relay::Relay;
pub use sandbox::{BootTimes, Sandbox};
