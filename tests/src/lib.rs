//! Shared helpers for the workspace's integration tests: golden vectors,
//! and (in later modules) the simulator and the end-to-end harness.

pub mod bench;
pub mod guest;
pub mod harness;
pub mod hostfs;
pub mod rng;
pub mod sim;
pub mod vectors;
