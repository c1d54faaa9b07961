//! Rebuilds the crate when a migration is added or changed: `migrate!`
//! embeds the files at compile time.

#![allow(clippy::print_stdout)] // cargo reads build instructions from stdout

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
