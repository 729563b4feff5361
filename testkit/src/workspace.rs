//! Building the workspace's binaries from inside a test, as `cargo test --workspace` and
//! `scripts/test-binaries` build them, so that the build is a no-op after theirs.

use std::path::Path;
use std::process::Command;

/// `cargo build` of every package's binaries and tests (the selection `cargo test
/// --workspace` builds, with dev-dependencies' features: building fewer packages resolves
/// other features and compiles the dependency tree a second time), from `dir`, as from a
/// shell: ring's build script watches the CARGO_MANIFEST_* and CARGO_PKG_* variables cargo
/// gives a test, and would rebuild ring, rustls, reqwest and the workspace crates here, then
/// again in the next build from a shell.
pub fn build_command(dir: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
        .current_dir(dir);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_MANIFEST_") || name.starts_with("CARGO_PKG_") {
            build.env_remove(name.as_ref());
        }
    }
    build
}
