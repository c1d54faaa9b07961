//! The PostgreSQL adapter beyond the contract.

mod cluster;
mod hot_path;
mod schemas;
