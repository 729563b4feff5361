//! What one benchmark run measures: the command line, and the rows it turns into (pure).

use std::path::PathBuf;

use archiver_testkit::shaper::{LinkProfile, AZURE_ACS, AZURE_BLOB};
use clap::Parser;
use recording_archiver::config::TransferSettings;

/// 1 MiB.
pub const MIB: u64 = 1024 * 1024;

/// Measures recording-archiver's throughput, CPU and memory against the raw Azurite ingest
/// ceiling and a discarding sink, and prints one table with the targets.
#[derive(Parser, Debug, Clone)]
#[command(name = "archiver-bench")]
pub struct Options {
    /// Smoke run: 64 MiB chunks (96 MiB for the memory row) instead of 1 GiB (1.5 GiB).
    #[arg(long)]
    pub quick: bool,
    /// Chunk size of the ceiling and archive rows, in MiB (overrides --quick).
    #[arg(long, value_name = "MIB")]
    pub size_mib: Option<u64>,
    /// Chunk size of the peak-RSS row, in MiB (overrides --quick).
    #[arg(long, value_name = "MIB")]
    pub big_size_mib: Option<u64>,
    /// TRANSFER_BLOCK_BYTES for the handler, and the ceiling's block size [default: the
    /// handler's default].
    #[arg(long, value_name = "BYTES")]
    pub block_bytes: Option<usize>,
    /// TRANSFER_PARALLEL_BLOCKS for the handler [default: the handler's default].
    #[arg(long, value_name = "N")]
    pub parallel_blocks: Option<usize>,
    /// An extra variable for every handler, e.g. `RUST_LOG=info` or `MALLOC_ARENA_MAX=2`
    /// (repeatable; applied after the row's own settings).
    #[arg(long = "handler-env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub handler_env: Vec<(String, String)>,
    /// Times every row is measured (in rounds over all rows); the table shows medians
    /// [default: 5, 1 with --quick].
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Put Blocks in flight for the raw ceiling.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub ceiling_parallel: usize,
    /// The `handler` binary [default: next to this binary].
    #[arg(long, value_name = "PATH")]
    pub handler: Option<PathBuf>,
    /// The `acs-emulator` binary [default: next to this binary].
    #[arg(long, value_name = "PATH")]
    pub acs_emulator: Option<PathBuf>,
    /// Run only the rows whose label contains this text (e.g. `discard`), for profiling.
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// Give up on the whole run after this many minutes.
    #[arg(long, value_name = "MINUTES", default_value_t = 20)]
    pub max_minutes: u64,
    /// The network-shaped run instead: every row through shaping proxies on the ACS side and
    /// the Blob side (testkit `shaper`): the handler with 1, 2, 4 and 8 parallel ranges, and
    /// Microsoft's Python SDKs; 256 MiB chunks (1.5 GiB for the memory row), one round.
    #[arg(long)]
    pub wan: bool,
    /// With --wan: bandwidth of each connection to ACS, MB/s [default: testkit's AZURE_ACS].
    #[arg(long, value_name = "MB/S")]
    pub acs_mbps: Option<f64>,
    /// With --wan: round trip to ACS, ms [default: testkit's AZURE_ACS].
    #[arg(long, value_name = "MS")]
    pub acs_rtt_ms: Option<u64>,
    /// With --wan: bandwidth of each connection to Blob Storage, MB/s [default: AZURE_BLOB].
    #[arg(long, value_name = "MB/S")]
    pub blob_mbps: Option<f64>,
    /// With --wan: round trip to Blob Storage, ms [default: AZURE_BLOB].
    #[arg(long, value_name = "MS")]
    pub blob_rtt_ms: Option<u64>,
    /// With --wan: a Python with azure-communication-callautomation and azure-storage-blob,
    /// for the Python SDK row (`scripts/bench --wan` installs one under target/).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

/// `base` with the bandwidth and round trip given on the command line.
fn link(base: LinkProfile, mbps: Option<f64>, rtt_ms: Option<u64>) -> LinkProfile {
    LinkProfile {
        bytes_per_sec: mbps.map_or(base.bytes_per_sec, |m| (m * 1e6) as u64),
        rtt: rtt_ms.map_or(base.rtt, std::time::Duration::from_millis),
    }
}

/// `NAME=VALUE`.
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{text}`")),
    }
}

/// Where an archive row writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The repo's Azurite, in memory.
    Azurite,
    /// testkit's `DiscardSink`: accepts blocks and drops the bytes.
    Discard,
}

/// The integrity checks a row turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashing {
    /// `TRANSFER_CONTENT_MD5`.
    pub md5: bool,
    /// `TRANSFER_SHA256`.
    pub sha256: bool,
}

impl Hashing {
    /// No hashing at all.
    pub const OFF: Hashing = Hashing {
        md5: false,
        sha256: false,
    };
    /// The handler's defaults.
    pub fn defaults() -> Hashing {
        let d = TransferSettings::default();
        Hashing {
            md5: d.content_md5,
            sha256: d.sha256,
        }
    }
    /// Both.
    pub const BOTH: Hashing = Hashing {
        md5: true,
        sha256: true,
    };

    /// `off`, `SHA-256`, `MD5`, `MD5+SHA-256`.
    pub fn label(self) -> &'static str {
        match (self.md5, self.sha256) {
            (false, false) => "off",
            (false, true) => "SHA-256",
            (true, false) => "MD5",
            (true, true) => "MD5+SHA-256",
        }
    }
}

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// Raw parallel Put Block into Azurite from the benchmark itself.
    Ceiling,
    /// One chunk archived by a fresh handler from the ACS emulator.
    Archive {
        /// Where it goes.
        dest: Destination,
        /// Which checks are on.
        hashing: Hashing,
    },
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSpec {
    /// What is shown in the first column.
    pub label: String,
    /// What it measures.
    pub kind: RowKind,
    /// Chunk size in bytes.
    pub size: u64,
    /// Whether the peak-RSS target applies to it.
    pub rss_target: bool,
}

/// Everything one run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Chunk size of most rows.
    pub size: u64,
    /// Chunk size of the memory row.
    pub big_size: u64,
    /// Block size used by the handler and the ceiling.
    pub block_bytes: usize,
    /// Blocks in flight in the handler.
    pub parallel_blocks: usize,
    /// Handler variables set on the command line (block settings, `--handler-env`).
    pub overrides: Vec<(String, String)>,
    /// Put Blocks in flight for the ceiling.
    pub ceiling_parallel: usize,
    /// Times every row is measured.
    pub rounds: usize,
    /// The rows, in the order they run (none with `--wan`: see [`crate::wan`]).
    pub rows: Vec<RowSpec>,
    /// The link of every connection to ACS (`--wan`).
    pub acs_link: LinkProfile,
    /// The link of every connection to Blob Storage (`--wan`).
    pub blob_link: LinkProfile,
}

impl Plan {
    /// The rows for `options`.
    pub fn new(options: &Options) -> Plan {
        let (size_mib, big_mib) = match (options.quick, options.wan) {
            (true, false) => (64, 96),
            (false, false) => (1024, 1536),
            (true, true) => (16, 24),
            (false, true) => (256, 1536),
        };
        let size = options.size_mib.unwrap_or(size_mib).max(1) * MIB;
        let big_size = options.big_size_mib.unwrap_or(big_mib).max(1) * MIB;
        let defaults = TransferSettings::default();
        let mut overrides = Vec::new();
        if let Some(b) = options.block_bytes {
            overrides.push(("TRANSFER_BLOCK_BYTES".to_string(), b.to_string()));
        }
        if let Some(p) = options.parallel_blocks {
            overrides.push(("TRANSFER_PARALLEL_BLOCKS".to_string(), p.to_string()));
        }
        overrides.extend(options.handler_env.iter().cloned());
        let archive = |dest, hashing: Hashing, size, rss_target| {
            let to = match dest {
                Destination::Azurite => "Azurite",
                Destination::Discard => "discard sink",
            };
            let note = if hashing == Hashing::defaults() {
                " (defaults)"
            } else {
                ""
            };
            RowSpec {
                label: format!("archive -> {to}, hashing {}{note}", hashing.label()),
                kind: RowKind::Archive { dest, hashing },
                size,
                rss_target,
            }
        };
        let rows = vec![
            RowSpec {
                label: "ceiling: raw Put Block -> Azurite".to_string(),
                kind: RowKind::Ceiling,
                size,
                rss_target: false,
            },
            archive(Destination::Azurite, Hashing::OFF, size, false),
            archive(Destination::Azurite, Hashing::defaults(), size, false),
            archive(Destination::Azurite, Hashing::BOTH, size, false),
            archive(Destination::Discard, Hashing::OFF, size, false),
            archive(
                Destination::Discard,
                Hashing {
                    md5: false,
                    sha256: true,
                },
                size,
                false,
            ),
            archive(Destination::Discard, Hashing::BOTH, size, false),
            archive(Destination::Discard, Hashing::defaults(), big_size, true),
        ];
        let rows = match &options.only {
            _ if options.wan => Vec::new(),
            Some(text) => rows
                .into_iter()
                .filter(|r| r.label.contains(text))
                .collect(),
            None => rows,
        };
        Plan {
            size,
            big_size,
            block_bytes: options.block_bytes.unwrap_or(defaults.block_bytes),
            parallel_blocks: options.parallel_blocks.unwrap_or(defaults.parallel_blocks),
            overrides,
            ceiling_parallel: options.ceiling_parallel.max(1),
            rounds: options
                .rounds
                .unwrap_or(if options.quick || options.wan { 1 } else { 5 })
                .max(1),
            rows,
            acs_link: link(AZURE_ACS, options.acs_mbps, options.acs_rtt_ms),
            blob_link: link(AZURE_BLOB, options.blob_mbps, options.blob_rtt_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Options {
        Options::parse_from(std::iter::once("archiver-bench").chain(args.iter().copied()))
    }

    #[test]
    fn a_full_run_measures_every_row_the_issue_asks_for() {
        let plan = Plan::new(&options(&[]));
        assert_eq!(plan.size, 1024 * MIB);
        assert_eq!(plan.big_size, 1536 * MIB);
        assert_eq!(plan.rounds, 5);
        assert!(
            plan.overrides.is_empty(),
            "the handler runs on its defaults"
        );
        let archives: Vec<(Destination, Hashing)> = plan
            .rows
            .iter()
            .filter_map(|r| match r.kind {
                RowKind::Archive { dest, hashing } => Some((dest, hashing)),
                RowKind::Ceiling => None,
            })
            .collect();
        for want in [
            (Destination::Azurite, Hashing::OFF),
            (Destination::Azurite, Hashing::defaults()),
            (Destination::Azurite, Hashing::BOTH),
            (Destination::Discard, Hashing::OFF),
            (Destination::Discard, Hashing::BOTH),
        ] {
            assert!(archives.contains(&want), "{want:?}");
        }
        let big: Vec<_> = plan.rows.iter().filter(|r| r.rss_target).collect();
        assert_eq!(big.len(), 1);
        assert_eq!(big[0].size, 1536 * MIB);
    }

    #[test]
    fn quick_and_explicit_sizes() {
        let plan = Plan::new(&options(&["--quick"]));
        assert_eq!((plan.size, plan.big_size), (64 * MIB, 96 * MIB));
        assert_eq!(plan.rounds, 1);
        let plan = Plan::new(&options(&[
            "--quick",
            "--size-mib",
            "3",
            "--big-size-mib",
            "5",
            "--block-bytes",
            "1048576",
            "--handler-env",
            "RUST_LOG=debug",
        ]));
        assert_eq!((plan.size, plan.big_size), (3 * MIB, 5 * MIB));
        assert_eq!(plan.block_bytes, 1024 * 1024);
        assert_eq!(
            plan.overrides,
            vec![
                ("TRANSFER_BLOCK_BYTES".to_string(), "1048576".to_string()),
                ("RUST_LOG".to_string(), "debug".to_string())
            ]
        );
        assert!(Options::try_parse_from(["archiver-bench", "--handler-env", "=x"]).is_err());
    }

    #[test]
    fn the_wan_run_has_its_own_sizes_and_links() {
        let plan = Plan::new(&options(&["--wan"]));
        assert_eq!((plan.size, plan.big_size), (256 * MIB, 1536 * MIB));
        assert_eq!(plan.rounds, 1);
        assert!(plan.rows.is_empty(), "the wan module owns its rows");
        assert_eq!((plan.acs_link, plan.blob_link), (AZURE_ACS, AZURE_BLOB));
        let plan = Plan::new(&options(&[
            "--wan",
            "--acs-mbps",
            "5",
            "--blob-rtt-ms",
            "40",
        ]));
        assert_eq!(plan.acs_link.bytes_per_sec, 5_000_000);
        assert_eq!(plan.acs_link.rtt, AZURE_ACS.rtt);
        assert_eq!(plan.blob_link.rtt, std::time::Duration::from_millis(40));
    }
}
