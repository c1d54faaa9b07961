//! The Redis adapter beyond the contract.

mod cluster;
mod hot_path;
