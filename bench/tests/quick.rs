//! The benchmark still runs end to end: every row, on tiny chunks, in a debug build. It proves
//! the orchestration (Azurite, the ACS emulator process, a handler per row, the discarding
//! sink, the checks and the table) and never asserts a performance figure: a debug build on
//! a shared machine says nothing about speed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the handler and the ACS emulator the benchmark drives (other packages' binaries
/// are not built for this package's tests), and returns the directory they are in.
fn binaries() -> PathBuf {
    // The same selection `cargo test --workspace` builds, so right after it this is a no-op.
    let mut build =
        archiver_testkit::workspace::build_command(Path::new(env!("CARGO_MANIFEST_DIR")));
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building handler and acs-emulator failed");
    PathBuf::from(env!("CARGO_BIN_EXE_archiver-bench"))
        .parent()
        .expect("the bench binary is in a directory")
        .to_path_buf()
}

/// Runs the benchmark binary on tiny chunks with `args` and returns its stdout and stderr,
/// after checking it exited 0.
fn quick_run(args: &[&str]) -> (String, String) {
    let dir = binaries();
    let out = Command::new(env!("CARGO_BIN_EXE_archiver-bench"))
        .args(["--quick", "--size-mib", "2", "--big-size-mib", "3"])
        .args(["--block-bytes", "262144", "--max-minutes", "2"])
        .args(args)
        .arg("--handler")
        .arg(dir.join("handler"))
        .arg("--acs-emulator")
        .arg(dir.join("acs-emulator"))
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// The table line of the row labelled `label`, which must have checked out (" ok ").
fn checked_row<'a>(stdout: &'a str, stderr: &str, label: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no row `{label}`:\n{stdout}\n{stderr}"));
    assert!(line.contains(" ok "), "{line}\n{stderr}");
    line
}

#[test]
fn a_quick_run_measures_and_checks_every_row() {
    let (stdout, stderr) = quick_run(&[]);
    for row in [
        "ceiling: raw Put Block -> Azurite",
        "archive -> Azurite, hashing off",
        "archive -> Azurite, hashing SHA-256 (defaults)",
        "archive -> Azurite, hashing MD5+SHA-256",
        "archive -> discard sink, hashing off",
        "archive -> discard sink, hashing MD5+SHA-256",
    ] {
        checked_row(&stdout, &stderr, row);
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

/// The shaped run on its cheapest rows (the Python row needs the SDKs that `scripts/bench
/// --wan` installs, so it is left to that command): the handler signs for the resource's
/// name through the ACS-side shaper, writes through the Blob-side shaper (six chunks at once
/// in one handler for the capacity row), and the table shows the shaped limit and the
/// connections used.
#[test]
fn a_quick_wan_run_archives_through_both_shapers() {
    let (stdout, stderr) = quick_run(&["--wan", "--only", "4 ranges"]);
    for row in [
        "archive, 4 ranges -> Azurite",
        "archive, 4 ranges -> discard sink (memory)",
    ] {
        let line = checked_row(&stdout, &stderr, row);
        // The limit of 4 ranges at the default links: 4 x 12.5 MB/s from ACS.
        assert!(line.contains("  50.0  "), "{line}");
    }
    // Six chunks at once, each with its 4 ranges: 24 x 12.5 MB/s.
    let six = checked_row(&stdout, &stderr, "archive, 6 chunks at once, 4 ranges");
    assert!(six.contains("  300.0  "), "{six}");
    assert!(stdout.contains("links, per connection"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
