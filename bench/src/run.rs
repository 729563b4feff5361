//! One benchmark run: starts the ACS emulator, Azurite and the discarding sink, measures every
//! row of the [`Plan`] in order, and returns the measurements for the report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use archiver_testkit::azurite::Azurite;
use archiver_testkit::sink::DiscardSink;

use crate::archive::{self, ArchiveTarget};
use crate::ceiling;
use crate::children::{Emulator, Recording};
use crate::plan::{Destination, Options, Plan, RowKind, RowSpec, MIB};
use crate::report::{self, Measurement};
use archiver_testkit::procstat;

/// How long the emulator may take to print its start-up line.
pub(crate) const EMULATOR_START_LIMIT: Duration = Duration::from_secs(30);
/// How long the idle sample before the run lasts.
const IDLE_SAMPLE: Duration = Duration::from_secs(1);
/// Bytes written into every fresh Azurite before it is measured.
const WARM_UP: u64 = 64 * MIB;
/// The seed of every recording: rows of one size share content, hence one expected SHA-256.
pub(crate) const SEED: u64 = 7;

/// `name` from `--<flag>`, or next to this executable (where cargo puts every binary of the
/// workspace).
fn binary(explicit: &Option<PathBuf>, name: &str, flag: &str) -> Result<PathBuf, String> {
    let path = match explicit {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .unwrap_or(Path::new("."))
            .join(name),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it (scripts/bench does) or pass {flag}",
            path.display()
        ))
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    /// The machine and the settings measured, for the top of the report.
    pub header: Vec<String>,
    /// The table, with the targets met and missed.
    pub table: String,
    /// What the columns mean.
    pub legend: &'static str,
    /// Whether every row ran and checked out (missed targets do not count).
    pub all_ok: bool,
}

/// The legend of the loopback table.
const LEGEND: &str = "MB/s: 10^6 bytes/s, request to answer. x ceil: MB/s over the ceiling's. \
    CPU s/GiB and RSS MiB: the handler process alone (utime+stime and VmHWM from /proc, a fresh \
    process per row). emu s/GiB: the ACS emulator. busy: cores busy on the whole machine during \
    the row. Figures are medians over the rounds; the range of MB/s shows the noise of a shared \
    machine.";

/// The expected SHA-256 of the recordings of each of `sizes` (all generated from [`SEED`]).
pub(crate) async fn digests(
    sizes: impl Iterator<Item = u64>,
) -> Result<Vec<(u64, [u8; 32])>, String> {
    let mut sizes: Vec<u64> = sizes.collect();
    sizes.sort_unstable();
    sizes.dedup();
    tokio::task::spawn_blocking(move || {
        sizes
            .into_iter()
            .map(|s| (s, archiver_testkit::acs::Content::new(s, SEED).sha256()))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| e.to_string())
}

/// The machine line of a report: cores, CPU and how busy it was in the second before.
pub(crate) async fn machine_line() -> Result<String, String> {
    let idle0 = procstat::machine().map_err(|e| e.to_string())?;
    tokio::time::sleep(IDLE_SAMPLE).await;
    let idle = procstat::machine()
        .map_err(|e| e.to_string())?
        .busy_cores_since(&idle0);
    Ok(format!(
        "machine: {} cores ({}); {:.2} cores busy in the second before the run (other work)",
        idle0.cores,
        procstat::cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        idle
    ))
}

/// Measures every row of the plan for `options`, in order, each against fresh servers where
/// it matters; `log` receives progress lines (what runs, and each row's throughput).
pub async fn run(options: &Options, log: &mut dyn FnMut(&str)) -> Result<Outcome, String> {
    let plan = Plan::new(options);
    let handler_bin = binary(&options.handler, "handler", "--handler")?;
    let emulator_bin = binary(&options.acs_emulator, "acs-emulator", "--acs-emulator")?;
    if options.wan {
        return crate::wan::run(options, &plan, &handler_bin, &emulator_bin, log).await;
    }

    let header = vec![
        machine_line().await?,
        format!(
            "chunks: {} MiB ({} MiB for the memory row); handler: {} KiB blocks, {} in flight; \
             ceiling: {} in flight; a fresh Azurite (in memory) for every Azurite run; \
             {} round(s), medians shown",
            plan.size / MIB,
            plan.big_size / MIB,
            plan.block_bytes / 1024,
            plan.parallel_blocks,
            plan.ceiling_parallel,
            plan.rounds
        ),
    ];
    for line in &header {
        log(line);
    }

    // One recording per archive row and round, so no run finds another's work.
    let recordings: Vec<((usize, usize), Recording)> = (0..plan.rounds)
        .flat_map(|round| {
            plan.rows
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(r.kind, RowKind::Archive { .. }))
                .map(move |(i, r)| {
                    let recording = Recording {
                        document_id: format!("bench-{}-r{round}-row{i}", std::process::id()),
                        size: r.size,
                        seed: SEED,
                    };
                    ((round, i), recording)
                })
        })
        .collect();
    let sizes = plan
        .rows
        .iter()
        .filter(|r| matches!(r.kind, RowKind::Archive { hashing, .. } if hashing.sha256))
        .map(|r| r.size);
    log("computing the expected SHA-256 of the recordings");
    let digests = digests(sizes).await?;
    let digest_of = |size: u64| digests.iter().find(|(s, _)| *s == size).map(|(_, d)| *d);

    let list: Vec<Recording> = recordings.iter().map(|(_, r)| r.clone()).collect();
    let emulator = Emulator::start(&emulator_bin, &list, None, EMULATOR_START_LIMIT).await?;
    let sink = DiscardSink::start().await.map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    // RecordingTransfer never touches the Queue service: the sink's address stands in, so a
    // stray call would fail loudly instead of reaching a real queue.
    let sink_storage = archive::connection_string(&sink.endpoint(), &sink.endpoint());

    // Rounds run every row in turn, so a slow spell on the machine touches all rows alike;
    // the report takes each row's median.
    let mut runs: Vec<Vec<Measurement>> = vec![Vec::new(); plan.rows.len()];
    for round in 0..plan.rounds {
        for (i, spec) in plan.rows.iter().enumerate() {
            log(&format!(
                "round {}/{}: {}",
                round + 1,
                plan.rounds,
                spec.label
            ));
            let document_id = recordings
                .iter()
                .find(|(key, _)| *key == (round, i))
                .map(|(_, r)| r.document_id.as_str())
                .unwrap_or_default();
            let row = Row {
                spec,
                container: format!("bench-{}-r{round}-{i}", std::process::id()),
                document_id,
                sha256: digest_of(spec.size),
            };
            let measured =
                measure(&row, &plan, &handler_bin, &emulator, &sink_storage, &http).await?;
            log(&format!(
                "  {:.0} MB/s in {:.2} s{}",
                measured.mbps(spec.size),
                measured.elapsed.as_secs_f64(),
                match &measured.check {
                    Ok(()) => String::new(),
                    Err(e) => format!(", FAILED: {e}"),
                }
            ));
            runs[i].push(measured);
        }
    }
    drop(sink);
    drop(emulator);
    let all_ok = runs.iter().flatten().all(|m| m.check.is_ok());
    let rows: Vec<(RowSpec, Vec<Measurement>)> = plan.rows.iter().cloned().zip(runs).collect();
    Ok(Outcome {
        header,
        table: report::render(&rows),
        legend: LEGEND,
        all_ok,
    })
}

/// One run of one row.
struct Row<'a> {
    spec: &'a RowSpec,
    container: String,
    document_id: &'a str,
    /// The recording's SHA-256 (used when the row computes one).
    sha256: Option<[u8; 32]>,
}

/// Measures one run of a row. Azurite slows down as it fills (measured: 400 MB/s empty,
/// 220 MB/s with 4 GiB in it) and frees nothing for ten minutes, so every run that writes into
/// it gets a fresh one: all Azurite runs start from the same state.
async fn measure(
    row: &Row<'_>,
    plan: &Plan,
    handler_bin: &Path,
    emulator: &Emulator,
    sink_storage: &str,
    http: &reqwest::Client,
) -> Result<Measurement, String> {
    let spec = row.spec;
    let azurite = match spec.kind {
        RowKind::Ceiling
        | RowKind::Archive {
            dest: Destination::Azurite,
            ..
        } => Some(fresh_azurite(spec.size, plan, http).await?),
        RowKind::Archive { .. } => None,
    };
    let azurite_storage = azurite
        .as_ref()
        .map(|a| archive::connection_string(&a.blob_endpoint(), &a.queue_endpoint()))
        .unwrap_or_default();
    match spec.kind {
        RowKind::Ceiling => {
            let client = archive::blob_client(&azurite_storage, &row.container, http.clone())?;
            client.create_container().await.map_err(|e| e.to_string())?;
            let before = procstat::machine().map_err(|e| e.to_string())?;
            let started = Instant::now();
            let result = tokio::time::timeout(
                archive::row_limit(spec.size),
                ceiling::measure(
                    &client,
                    "ceiling.bin",
                    spec.size,
                    plan.block_bytes,
                    plan.ceiling_parallel,
                ),
            )
            .await
            .unwrap_or_else(|_| Err("ceiling: timed out".into()));
            let elapsed = match &result {
                Ok(d) => *d,
                Err(_) => started.elapsed(),
            };
            let after = procstat::machine().map_err(|e| e.to_string())?;
            Ok(Measurement {
                elapsed,
                ours: None,
                emulator_cpu: None,
                busy_cores: after.busy_cores_since(&before),
                check: result.map(drop),
            })
        }
        RowKind::Archive { dest, hashing } => {
            let target = ArchiveTarget {
                connection_string: match dest {
                    Destination::Azurite => &azurite_storage,
                    Destination::Discard => sink_storage,
                },
                container: &row.container,
                size: spec.size,
                sha256: row.sha256.filter(|_| hashing.sha256),
                env: &[],
            };
            let acs = archive::AcsAccess::new(emulator, row.document_id, None)?;
            archive::run(handler_bin, emulator, &[acs], plan, hashing, &target, http).await
        }
    }
}

/// A fresh in-memory Azurite with room for a chunk of `size`, warmed up.
pub(crate) async fn fresh_azurite(
    size: u64,
    plan: &Plan,
    http: &reqwest::Client,
) -> Result<Azurite, String> {
    let azurite = start_azurite(size + WARM_UP).await?;
    let storage = archive::connection_string(&azurite.blob_endpoint(), &azurite.queue_endpoint());
    // A fresh Node process runs its first requests cold (measured over 7 runs: the ceiling
    // ranged 363-432 MB/s without this, 394-423 with it); every Azurite run is warmed up alike.
    let client = archive::blob_client(&storage, "warm-up", http.clone())?;
    client.create_container().await.map_err(|e| e.to_string())?;
    tokio::time::timeout(
        archive::row_limit(WARM_UP),
        ceiling::measure(&client, "warm-up.bin", WARM_UP, plan.block_bytes, 4),
    )
    .await
    .unwrap_or_else(|_| Err("timed out".into()))
    .map_err(|e| format!("warming Azurite up: {e}"))?;
    Ok(azurite)
}

/// A fresh in-memory Azurite with room for `bytes` of blobs.
async fn start_azurite(bytes: u64) -> Result<Azurite, String> {
    let limit_mib = (bytes / MIB) * 5 / 4 + 256;
    tokio::task::spawn_blocking(move || {
        Azurite::start_with_args(&["--extentMemoryLimit", &limit_mib.to_string()])
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("Azurite: {e}"))
}
