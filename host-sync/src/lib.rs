//! `host-sync`: boot, drive and share a picosandbox guest from blocking Rust.

pub mod qemu;
