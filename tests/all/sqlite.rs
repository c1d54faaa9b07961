//! The SQLite adapter beyond the contract.

mod hot_path;
