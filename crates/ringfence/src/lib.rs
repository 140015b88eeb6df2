//! Ringfence: the binary's library (HTTP API, storage, simulator, benchmarks).

pub mod bench;
pub mod client;
pub mod simulate;
