//! The network-shaped run (`--wan`): the same emulators as the loopback run, but every
//! connection to ACS and to Blob Storage goes through a testkit [`Shaper`] that gives it its
//! own bandwidth and round trip ([`Plan::acs_link`], [`Plan::blob_link`]), so throughput comes
//! from concurrency as in Azure. Rows, side by side: the handler reading each chunk as 1
//! (today's single stream), 2, 4 and 8 parallel ranges (`TRANSFER_PARALLEL_RANGES`), and
//! Microsoft's Python SDKs as their docs show them (`download_recording` into `upload_blob`,
//! `bench/python/sdk_pipeline.py`); then a 1.5 GiB chunk with the default 4 ranges for peak
//! memory, and six chunks at once in one handler (the most queue messages the host runs at
//! once on one instance with our host.json) for an instance's capacity.
//!
//! Each row is judged against its **shaped limit**: the lower of what the ACS side can carry
//! for the connections the row uses (per-connection rate x ranges) and what the Blob side can
//! (per-connection rate x Put Blocks in flight). The Python row uses one connection on each
//! side (`upload_blob` defaults to `max_concurrency=1`) and runs them one after the other.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use archiver_testkit::shaper::Shaper;
use archiver_testkit::sink::DiscardSink;
use serde_json::json;

use crate::archive::{self, AcsAccess, ArchiveTarget};
use crate::children::{Emulator, PythonPipeline, Recording};
use crate::plan::{Destination, Hashing, Options, Plan, MIB};
use crate::report::{cpu_per_gib, summarize, Measurement, Sample, TARGET_PEAK_RSS};
use crate::run::{self, Outcome};

/// The ACS resource's host name in the run: what every client signs for. Never resolved.
pub const RESOURCE_HOST: &str = "bench.communication.azure.com";
/// The recording host the Python SDK is given (it accepts only ACS's own recording hosts);
/// its transport sends requests for it to the ACS-side shaper. Never resolved.
pub const RECORDING_HOST: &str = "bench.asm.skype.com";
/// With ranges, throughput as a share of the shaped limit.
pub const TARGET_LIMIT_RATIO: f64 = 0.9;
/// The most ranges measured, against the Python SDK row.
pub const TARGET_X_PYTHON: f64 = 3.0;
/// The `TRANSFER_PARALLEL_RANGES` values measured.
pub const RANGES: [usize; 4] = [1, 2, 4, 8];
/// Ranges of the memory row: the handler's default, whose memory the 64 MiB target is about.
pub const MEMORY_RANGES: usize = 4;
/// Chunks of the capacity row, archived at once by one handler: the most queue messages the
/// host runs at once on one instance with our host.json (`batchSize` 4 + `newBatchThreshold` 2).
pub const CAPACITY_CHUNKS: usize = 6;
/// The Storage REST version the handler sends (`src/storage/transport.rs`), given to the Python
/// Blob client too: Azurite refuses the newer one the SDK sends by default.
const BLOB_API_VERSION: &str = "2021-08-06";
/// How long the Python process may take to import the SDKs and build its clients.
const PYTHON_START_LIMIT: Duration = Duration::from_secs(60);

/// What a row runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WanKind {
    /// The handler, reading the chunk as `ranges` parallel ranges.
    Handler {
        /// `TRANSFER_PARALLEL_RANGES`.
        ranges: usize,
        /// Where it writes.
        dest: Destination,
    },
    /// Microsoft's Python SDKs, into Azurite.
    PythonSdk,
}

/// One row of the shaped table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WanRow {
    /// The first column.
    pub label: String,
    /// What it runs.
    pub kind: WanKind,
    /// Chunk size in bytes.
    pub size: u64,
    /// Chunks archived at once (by one handler), each of `size`.
    pub chunks: usize,
    /// Whether the peak-RSS target applies.
    pub rss_target: bool,
}

/// The rows of a `--wan` run (those whose label contains `only`, when given).
pub fn rows(plan: &Plan, only: Option<&str>) -> Vec<WanRow> {
    let mut rows: Vec<WanRow> = RANGES
        .iter()
        .map(|&ranges| WanRow {
            label: match ranges {
                1 => "archive, 1 range (single stream) -> Azurite".to_string(),
                n => format!("archive, {n} ranges -> Azurite"),
            },
            kind: WanKind::Handler {
                ranges,
                dest: Destination::Azurite,
            },
            size: plan.size,
            chunks: 1,
            rss_target: false,
        })
        .collect();
    rows.push(WanRow {
        label: "Python SDKs: download_recording -> upload_blob -> Azurite".into(),
        kind: WanKind::PythonSdk,
        size: plan.size,
        chunks: 1,
        rss_target: false,
    });
    rows.push(WanRow {
        label: format!("archive, {MEMORY_RANGES} ranges -> discard sink (memory)"),
        kind: WanKind::Handler {
            ranges: MEMORY_RANGES,
            dest: Destination::Discard,
        },
        size: plan.big_size,
        chunks: 1,
        rss_target: true,
    });
    rows.push(WanRow {
        label: format!(
            "archive, {CAPACITY_CHUNKS} chunks at once, {MEMORY_RANGES} ranges -> discard sink (capacity)"
        ),
        kind: WanKind::Handler {
            ranges: MEMORY_RANGES,
            dest: Destination::Discard,
        },
        size: plan.size,
        chunks: CAPACITY_CHUNKS,
        rss_target: false,
    });
    rows.retain(|r| only.is_none_or(|text| r.label.contains(text)));
    rows
}

impl WanRow {
    /// Bytes the row moves.
    pub fn bytes(&self) -> u64 {
        self.size * self.chunks as u64
    }
}

/// The row's shaped limit in bytes per second: the lower of the ACS side's and the Blob
/// side's aggregate caps for the connections it uses.
pub fn shaped_limit(row: &WanRow, plan: &Plan) -> u64 {
    let (sources, sinks) = match row.kind {
        WanKind::Handler { ranges, .. } => (ranges * row.chunks, plan.parallel_blocks * row.chunks),
        WanKind::PythonSdk => (1, 1),
    };
    plan.acs_link
        .aggregate(sources)
        .min(plan.blob_link.aggregate(sinks))
}

/// One run of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct WanMeasurement {
    /// Time, CPU, memory and the check, as in the loopback table.
    pub measured: Measurement,
    /// The most connections open at once to the ACS side and to the Blob side.
    pub connections: (usize, usize),
}

/// The table: MB/s, shaped limit, ratio, ratio to the Python row, connections, CPU s/GiB and
/// peak RSS per row, then the targets met and missed.
pub fn render(plan: &Plan, rows: &[(WanRow, Vec<WanMeasurement>)]) -> String {
    let summary: Vec<(&WanRow, Measurement, (usize, usize))> = rows
        .iter()
        .filter_map(|(row, runs)| {
            let measured: Vec<Measurement> = runs.iter().map(|r| r.measured.clone()).collect();
            let conns = runs.iter().map(|r| r.connections).max().unwrap_or((0, 0));
            Some((row, summarize(&measured)?, conns))
        })
        .collect();
    let python = summary
        .iter()
        .find(|(r, m, _)| r.kind == WanKind::PythonSdk && m.check.is_ok())
        .map(|(r, m, _)| m.mbps(r.bytes()));
    let most_ranges = summary
        .iter()
        .filter_map(|(r, _, _)| match r.kind {
            WanKind::Handler {
                ranges,
                dest: Destination::Azurite,
            } => Some(ranges),
            _ => None,
        })
        .max();
    let width = summary
        .iter()
        .map(|(r, ..)| r.label.len())
        .max()
        .unwrap_or(10);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>8}  {:>6}  {:>7}  {:>7}  {:>8}  {:>7}  {:>9}  {:>7}  {:<5}  targets",
        "row",
        "size MiB",
        "MB/s",
        "limit",
        "x limit",
        "x Python",
        "conns",
        "CPU s/GiB",
        "RSS MiB",
        "check"
    );
    let mut misses = Vec::new();
    for (row, m, (acs_conns, blob_conns)) in &summary {
        let mbps = m.mbps(row.bytes());
        let limit = shaped_limit(row, plan) as f64 / 1e6;
        let ratio = mbps / limit;
        let x_python = python.map(|p| mbps / p);
        let ok = m.check.is_ok();
        let mut targets = Vec::new();
        let mut judge = |target: String, pass: bool| {
            if !(ok && pass) {
                misses.push(format!("{}: {target}", row.label));
            }
            targets.push(format!(
                "{target} {}",
                if ok && pass { "PASS" } else { "MISS" }
            ));
        };
        if let WanKind::Handler { ranges, dest } = row.kind {
            // The capacity row measures the instance, which has no target.
            if ranges > 1 && row.chunks == 1 {
                judge(
                    format!("x limit>={TARGET_LIMIT_RATIO}"),
                    ratio >= TARGET_LIMIT_RATIO,
                );
            }
            if dest == Destination::Azurite && Some(ranges) == most_ranges && ranges > 1 {
                judge(
                    format!("x Python>={TARGET_X_PYTHON}"),
                    x_python.is_some_and(|x| x >= TARGET_X_PYTHON),
                );
            }
        }
        if row.rss_target {
            judge(
                format!("RSS<={}MiB", TARGET_PEAK_RSS / MIB),
                m.ours.is_some_and(|u| u.peak_rss <= TARGET_PEAK_RSS),
            );
        }
        let _ =
            writeln!(
            out,
            "{:<width$}  {:>8}  {:>6.1}  {:>7.1}  {:>7.2}  {:>8}  {:>7}  {:>9}  {:>7}  {:<5}  {}",
            row.label,
            row.size / MIB,
            mbps,
            limit,
            ratio,
            x_python.map_or("-".into(), |x| format!("{x:.1}")),
            format!("{acs_conns}/{blob_conns}"),
            m.ours
                .map_or("-".into(), |u| format!("{:.2}", cpu_per_gib(u.cpu, row.bytes()))),
            m.ours
                .map_or("-".into(), |u| format!("{:.1}", u.peak_rss as f64 / MIB as f64)),
            if ok { "ok" } else { "FAIL" },
            targets.join(", ")
        );
    }
    crate::report::write_misses(&mut out, &misses);
    for (row, m, _) in &summary {
        if let Err(e) = &m.check {
            let _ = writeln!(out, "FAILED {}: {e}", row.label);
        }
    }
    out
}

/// What the columns mean.
const LEGEND: &str = "MB/s: 10^6 bytes/s, request to answer, through the shaping proxies. \
    limit: the row's shaped limit, the lower of the ACS side's cap (per-connection rate x \
    ranges x chunks; 1 for Python) and the Blob side's (per-connection rate x Put Blocks in \
    flight x chunks; 1 for Python's upload_blob defaults). x limit: MB/s over it. x Python: MB/s over the Python \
    SDK row's. conns: the most connections open at once to ACS / to Blob during the row (a \
    reader asks for its next range about a round trip before its current one ends, so it \
    holds two for that time). CPU s/GiB and RSS MiB: the handler's (or the Python process's) own, from /proc, a fresh \
    process per row.";

/// `endpoint` (`http://host:port/path`) with its authority replaced by `authority`.
fn via(endpoint: &str, authority: &str) -> String {
    let rest = endpoint.trim_start_matches("http://");
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("http://{authority}{path}")
}

/// The socket address of `endpoint`'s authority (`http://127.0.0.1:port/...`).
fn addr_of(endpoint: &str) -> Result<SocketAddr, String> {
    let rest = endpoint.trim_start_matches("http://");
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .map_err(|_| format!("`{endpoint}` is not a loopback address"))
}

/// Runs the shaped rows in order, one fresh Azurite (behind a fresh shaper) per Azurite row.
pub async fn run(
    options: &Options,
    plan: &Plan,
    handler_bin: &Path,
    emulator_bin: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Outcome, String> {
    let rows = rows(plan, options.only.as_deref());
    let python = match (
        &options.python,
        rows.iter().any(|r| r.kind == WanKind::PythonSdk),
    ) {
        (Some(p), true) => Some(p.clone()),
        (None, true) => {
            return Err(
                "the Python SDK row needs --python (scripts/bench --wan installs the SDKs)".into(),
            )
        }
        (_, false) => None,
    };
    let header = vec![
        run::machine_line().await?,
        format!(
            "chunks: {} MiB ({} MiB for the memory row); handler: {} KiB blocks, {} in flight, \
             SHA-256 on; {} round(s), medians shown",
            plan.size / MIB,
            plan.big_size / MIB,
            plan.block_bytes / 1024,
            plan.parallel_blocks,
            plan.rounds
        ),
        format!(
            "links, per connection and direction: ACS {:.1} MB/s, {} ms round trip; Blob {:.1} \
             MB/s, {} ms round trip (testkit shaper; AZURE_ACS and AZURE_BLOB say where the \
             defaults come from)",
            plan.acs_link.bytes_per_sec as f64 / 1e6,
            plan.acs_link.rtt.as_millis(),
            plan.blob_link.bytes_per_sec as f64 / 1e6,
            plan.blob_link.rtt.as_millis()
        ),
    ];
    for line in &header {
        log(line);
    }

    let document_id =
        |round: usize, i: usize| format!("wan-{}-r{round}-row{i}", std::process::id());
    let chunk_ids = |round: usize, i: usize, chunks: usize| -> Vec<String> {
        match chunks {
            1 => vec![document_id(round, i)],
            n => (0..n)
                .map(|c| format!("{}-c{c}", document_id(round, i)))
                .collect(),
        }
    };
    let recordings: Vec<Recording> = (0..plan.rounds)
        .flat_map(|round| {
            rows.iter().enumerate().flat_map(move |(i, r)| {
                chunk_ids(round, i, r.chunks)
                    .into_iter()
                    .map(move |document_id| Recording {
                        document_id,
                        size: r.size,
                        seed: run::SEED,
                    })
            })
        })
        .collect();
    log("computing the expected SHA-256 of the recordings");
    let digests = run::digests(rows.iter().map(|r| r.size)).await?;
    let digest_of = |size: u64| digests.iter().find(|(s, _)| *s == size).map(|(_, d)| *d);

    let emulator = Emulator::start(
        emulator_bin,
        &recordings,
        Some(RESOURCE_HOST),
        run::EMULATOR_START_LIMIT,
    )
    .await?;
    let storage_addr: SocketAddr = emulator
        .storage_authority
        .parse()
        .map_err(|_| format!("emulator storage at `{}`", emulator.storage_authority))?;
    // The emulator checks `Host` against its own address, as a backend behind a front door.
    let acs_shaper = Shaper::start(
        storage_addr,
        plan.acs_link,
        Some(emulator.storage_authority.clone()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let sink = DiscardSink::start().await.map_err(|e| e.to_string())?;
    let sink_shaper = Shaper::start(addr_of(&sink.endpoint())?, plan.blob_link, None)
        .await
        .map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;

    let mut runs: Vec<Vec<WanMeasurement>> = vec![Vec::new(); rows.len()];
    for round in 0..plan.rounds {
        for (i, row) in rows.iter().enumerate() {
            log(&format!(
                "round {}/{}: {}",
                round + 1,
                plan.rounds,
                row.label
            ));
            let document_id = document_id(round, i);
            let container = format!("wan-{}-r{round}-{i}", std::process::id());
            let azurite = match row.kind {
                WanKind::Handler {
                    dest: Destination::Discard,
                    ..
                } => None,
                _ => Some(run::fresh_azurite(row.size, plan, &http).await?),
            };
            let blob_shaper = match &azurite {
                Some(a) => Some(
                    Shaper::start(addr_of(&a.blob_endpoint())?, plan.blob_link, None)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
                None => None,
            };
            let (blob_endpoint, queue_endpoint, blob_conns) = match (&azurite, &blob_shaper) {
                (Some(a), Some(s)) => (
                    via(&a.blob_endpoint(), &s.authority()),
                    a.queue_endpoint(),
                    s,
                ),
                // RecordingTransfer never touches the Queue service: the sink stands in.
                _ => (
                    via(&sink.endpoint(), &sink_shaper.authority()),
                    sink.endpoint(),
                    &sink_shaper,
                ),
            };
            let storage = archive::connection_string(&blob_endpoint, &queue_endpoint);
            acs_shaper.take_peak();
            blob_conns.take_peak();
            let measured = match row.kind {
                WanKind::Handler { ranges, .. } => {
                    let env = [("TRANSFER_PARALLEL_RANGES".to_string(), ranges.to_string())];
                    let target = ArchiveTarget {
                        connection_string: &storage,
                        container: &container,
                        size: row.size,
                        sha256: digest_of(row.size).filter(|_| Hashing::defaults().sha256),
                        env: &env,
                    };
                    let acs = chunk_ids(round, i, row.chunks)
                        .iter()
                        .map(|id| AcsAccess::new(&emulator, id, Some(&acs_shaper.authority())))
                        .collect::<Result<Vec<_>, _>>()?;
                    archive::run(
                        handler_bin,
                        &emulator,
                        &acs,
                        plan,
                        Hashing::defaults(),
                        &target,
                        &http,
                    )
                    .await?
                }
                WanKind::PythonSdk => {
                    let python = python.as_deref().ok_or("no --python")?;
                    let direct = archive::connection_string(
                        &azurite
                            .as_ref()
                            .map(|a| a.blob_endpoint())
                            .unwrap_or_default(),
                        &queue_endpoint,
                    );
                    python_row(PythonRow {
                        python,
                        emulator: &emulator,
                        acs_route: &acs_shaper.authority(),
                        document_id: &document_id,
                        storage: &storage,
                        direct_storage: &direct,
                        container: &container,
                        size: row.size,
                        http: &http,
                    })
                    .await?
                }
            };
            let connections = (acs_shaper.take_peak().0, blob_conns.take_peak().0);
            log(&format!(
                "  {:.1} MB/s in {:.2} s, {}/{} connections{}",
                measured.mbps(row.bytes()),
                measured.elapsed.as_secs_f64(),
                connections.0,
                connections.1,
                match &measured.check {
                    Ok(()) => String::new(),
                    Err(e) => format!(", FAILED: {e}"),
                }
            ));
            runs[i].push(WanMeasurement {
                measured,
                connections,
            });
        }
    }
    let all_ok = runs.iter().flatten().all(|m| m.measured.check.is_ok());
    let rows: Vec<(WanRow, Vec<WanMeasurement>)> = rows.into_iter().zip(runs).collect();
    Ok(Outcome {
        header,
        table: render(plan, &rows),
        legend: LEGEND,
        all_ok,
    })
}

/// What the Python row needs.
struct PythonRow<'a> {
    python: &'a Path,
    emulator: &'a Emulator,
    /// The ACS-side shaper, where the SDK's transport sends the recording host's requests.
    acs_route: &'a str,
    document_id: &'a str,
    /// Through the Blob-side shaper, for the SDK.
    storage: &'a str,
    /// Straight to Azurite, for the set-up and the check.
    direct_storage: &'a str,
    container: &'a str,
    size: u64,
    http: &'a reqwest::Client,
}

/// Runs the Python SDK pipeline once and measures its process like a handler's.
async fn python_row(row: PythonRow<'_>) -> Result<Measurement, String> {
    let client = archive::blob_client(row.direct_storage, row.container, row.http.clone())?;
    client.create_container().await.map_err(|e| e.to_string())?;
    let blob = format!("{}.mp4", row.document_id);
    let (content, ..) = row
        .emulator
        .urls_of(row.document_id)
        .ok_or_else(|| format!("the emulator does not serve {}", row.document_id))?;
    let recording_url = content.replacen(
        &format!("http://{}", row.emulator.storage_authority),
        &format!("https://{RECORDING_HOST}"),
        1,
    );
    let settings = json!({
        "acs_connection_string": row.emulator.connection_string,
        "recording_url": recording_url,
        "route": row.acs_route,
        "blob_connection_string": row.storage,
        "blob_api_version": BLOB_API_VERSION,
        "container": row.container,
        "blob": blob,
    });
    let mut pipeline = PythonPipeline::start(row.python, &settings, PYTHON_START_LIMIT).await?;
    let (pid, emulator_pid) = (pipeline.pid(), row.emulator.pid());
    let before = Sample::take(pid, emulator_pid)?;
    let started = Instant::now();
    // A pipeline that failed has exited: there is no process left to measure.
    pipeline.go(archive::row_limit(row.size)).await?;
    let elapsed = started.elapsed();
    let after = Sample::take(pid, emulator_pid)?;
    let check = match client.get_properties(&blob).await {
        Ok(Some(p)) if p.content_length == row.size => Ok(()),
        Ok(Some(p)) => Err(format!(
            "{blob} holds {} bytes, not {}",
            p.content_length, row.size
        )),
        Ok(None) => Err(format!("{blob} was not committed")),
        Err(e) => Err(format!("checking {blob}: {e}")),
    };
    // The pipeline is still running (it is stopped when dropped): its peak RSS is read from it.
    let measured = before.until(&after, pid, elapsed, check);
    drop(pipeline);
    measured
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Usage;
    use clap::Parser;

    fn plan(args: &[&str]) -> Plan {
        let args = std::iter::once("archiver-bench")
            .chain(std::iter::once("--wan"))
            .chain(args.iter().copied());
        Plan::new(&Options::parse_from(args))
    }

    #[test]
    fn the_rows_are_ranges_1_to_8_the_python_sdks_a_big_chunk_for_memory_and_six_at_once() {
        let plan = plan(&[]);
        let rows = rows(&plan, None);
        let kinds: Vec<WanKind> = rows.iter().map(|r| r.kind).collect();
        let handler = |ranges, dest| WanKind::Handler { ranges, dest };
        assert_eq!(
            kinds,
            vec![
                handler(1, Destination::Azurite),
                handler(2, Destination::Azurite),
                handler(4, Destination::Azurite),
                handler(8, Destination::Azurite),
                WanKind::PythonSdk,
                handler(4, Destination::Discard),
                handler(4, Destination::Discard),
            ]
        );
        assert!(rows[..5]
            .iter()
            .all(|r| r.size == 256 * MIB && !r.rss_target && r.chunks == 1));
        assert_eq!((rows[5].size, rows[5].rss_target), (1536 * MIB, true));
        assert_eq!((rows[6].chunks, rows[6].bytes()), (6, 6 * 256 * MIB));
        // `--only range` keeps the handler rows: what the quick test runs without Python.
        let handler_only = super::rows(&plan, Some("range"));
        assert_eq!(handler_only.len(), 6);
        assert!(handler_only.iter().all(|r| r.kind != WanKind::PythonSdk));
    }

    #[test]
    fn the_limit_is_the_lower_of_the_two_sides_for_the_connections_used() {
        let plan = plan(&[
            "--acs-mbps",
            "10",
            "--blob-mbps",
            "30",
            "--parallel-blocks",
            "2",
        ]);
        let row = |kind, chunks| WanRow {
            label: String::new(),
            kind,
            size: MIB,
            chunks,
            rss_target: false,
        };
        let handler = |ranges, chunks| {
            row(
                WanKind::Handler {
                    ranges,
                    dest: Destination::Azurite,
                },
                chunks,
            )
        };
        assert_eq!(shaped_limit(&handler(1, 1), &plan), 10_000_000);
        assert_eq!(shaped_limit(&handler(4, 1), &plan), 40_000_000);
        assert_eq!(
            shaped_limit(&handler(8, 1), &plan),
            60_000_000,
            "2 Put Blocks x 30"
        );
        assert_eq!(
            shaped_limit(&handler(4, 3), &plan),
            120_000_000,
            "3 chunks of 4 ranges, 6 Put Blocks"
        );
        assert_eq!(shaped_limit(&row(WanKind::PythonSdk, 1), &plan), 10_000_000);
    }

    fn measured(secs: f64, rss_mib: u64) -> WanMeasurement {
        WanMeasurement {
            measured: Measurement {
                elapsed: Duration::from_secs_f64(secs),
                ours: Some(Usage {
                    cpu: Duration::from_secs(1),
                    peak_rss: rss_mib * MIB,
                }),
                emulator_cpu: None,
                busy_cores: 1.0,
                check: Ok(()),
            },
            connections: (1, 4),
        }
    }

    #[test]
    fn ranges_are_judged_against_the_limit_and_the_python_row() {
        // 100 MB at 10 MB/s per ACS connection; Blob wide open.
        let plan = plan(&[
            "--size-mib",
            "100",
            "--acs-mbps",
            "10",
            "--blob-mbps",
            "1000",
        ]);
        let all = rows(&plan, None);
        let size = plan.size as f64;
        let at = |mbps: f64| size / (mbps * 1e6);
        let table = render(
            &plan,
            &[
                (all[0].clone(), vec![measured(at(9.5), 30)]),
                (all[1].clone(), vec![measured(at(19.0), 30)]),
                (all[2].clone(), vec![measured(at(30.0), 30)]),
                (all[3].clone(), vec![measured(at(76.0), 30)]),
                (all[4].clone(), vec![measured(at(8.0), 300)]),
                (all[5].clone(), vec![measured(10.0, 70)]),
                (all[6].clone(), vec![measured(at(100.0) * 6.0, 200)]),
            ],
        );
        let line = |label: &str| {
            table
                .lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no `{label}`:\n{table}"))
                .to_string()
        };
        let single = line("archive, 1 range");
        assert!(
            !single.contains("x limit>="),
            "one range is today's baseline: {single}"
        );
        assert!(
            line("archive, 2 ranges").contains("x limit>=0.9 PASS"),
            "{table}"
        );
        assert!(
            line("archive, 4 ranges").contains("x limit>=0.9 MISS"),
            "{table}"
        );
        let eight = line("archive, 8 ranges -> Azurite");
        assert!(
            eight.contains(" 0.95 ") && eight.contains("x Python>=3 PASS"),
            "{eight}"
        );
        assert!(eight.contains("  9.5  "), "76 / 8 MB/s: {eight}");
        assert!(
            line("archive, 4 ranges -> discard").contains("RSS<=64MiB MISS"),
            "{table}"
        );
        let six = line("archive, 6 chunks at once");
        assert!(
            six.contains(" 100.0 ") && !six.contains(">="),
            "6 x 100 MB in 6 s; the instance has no target: {six}"
        );
        assert!(table.contains("targets missed:"), "{table}");
    }

    #[test]
    fn endpoints_are_redirected_to_a_proxy() {
        assert_eq!(
            via("http://127.0.0.1:10000/devstoreaccount1", "127.0.0.1:5"),
            "http://127.0.0.1:5/devstoreaccount1"
        );
        assert_eq!(
            addr_of("http://127.0.0.1:10000/devstoreaccount1").unwrap(),
            "127.0.0.1:10000".parse().unwrap()
        );
        assert!(addr_of("http://example.com/x").is_err());
    }
}
