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
use crate::report::Measurement;
use archiver_testkit::procstat;

/// How long the emulator may take to print its start-up line.
const EMULATOR_START_LIMIT: Duration = Duration::from_secs(30);
/// How long the idle sample before the run lasts.
const IDLE_SAMPLE: Duration = Duration::from_secs(1);
/// Bytes written into every fresh Azurite before it is measured.
const WARM_UP: u64 = 64 * MIB;
/// The seed of every recording: rows of one size share content, hence one expected SHA-256.
const SEED: u64 = 7;

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
    /// Every row with its measurements, one per round.
    pub rows: Vec<(RowSpec, Vec<Measurement>)>,
}

/// Measures every row of the plan for `options`, in order, each against fresh servers where
/// it matters; `log` receives progress lines (what runs, and each row's throughput).
pub async fn run(options: &Options, log: &mut dyn FnMut(&str)) -> Result<Outcome, String> {
    let plan = Plan::new(options);
    let handler_bin = binary(&options.handler, "handler", "--handler")?;
    let emulator_bin = binary(&options.acs_emulator, "acs-emulator", "--acs-emulator")?;

    let idle0 = procstat::machine().map_err(|e| e.to_string())?;
    tokio::time::sleep(IDLE_SAMPLE).await;
    let idle = procstat::machine()
        .map_err(|e| e.to_string())?
        .busy_cores_since(&idle0);
    let header = vec![
        format!(
            "machine: {} cores ({}); {:.2} cores busy in the second before the run (other work)",
            idle0.cores,
            procstat::cpu_model().unwrap_or_else(|| "unknown CPU".into()),
            idle
        ),
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
    let mut sizes: Vec<u64> = plan
        .rows
        .iter()
        .filter(|r| matches!(r.kind, RowKind::Archive { hashing, .. } if hashing.sha256))
        .map(|r| r.size)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    log("computing the expected SHA-256 of the recordings");
    let digests = tokio::task::spawn_blocking(move || {
        sizes
            .into_iter()
            .map(|s| (s, archiver_testkit::acs::Content::new(s, SEED).sha256()))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| e.to_string())?;
    let digest_of = |size: u64| digests.iter().find(|(s, _)| *s == size).map(|(_, d)| *d);

    let list: Vec<Recording> = recordings.iter().map(|(_, r)| r.clone()).collect();
    let emulator = Emulator::start(&emulator_bin, &list, EMULATOR_START_LIMIT).await?;
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
    Ok(Outcome {
        header,
        rows: plan.rows.iter().cloned().zip(runs).collect(),
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
        } => Some(start_azurite(spec.size + WARM_UP).await?),
        RowKind::Archive { .. } => None,
    };
    let azurite_storage = azurite
        .as_ref()
        .map(|a| archive::connection_string(&a.blob_endpoint(), &a.queue_endpoint()))
        .unwrap_or_default();
    if azurite.is_some() {
        // A fresh Node process runs its first requests cold (measured over 7 runs: the
        // ceiling ranged 363-432 MB/s without this, 394-423 with it); every Azurite run is
        // warmed up alike.
        let client = archive::blob_client(&azurite_storage, "warm-up", http.clone())?;
        client.create_container().await.map_err(|e| e.to_string())?;
        tokio::time::timeout(
            archive::row_limit(WARM_UP),
            ceiling::measure(&client, "warm-up.bin", WARM_UP, plan.block_bytes, 4),
        )
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
        .map_err(|e| format!("warming Azurite up: {e}"))?;
    }
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
                document_id: row.document_id,
                size: spec.size,
                sha256: row.sha256.filter(|_| hashing.sha256),
            };
            archive::run(handler_bin, emulator, plan, hashing, &target, http).await
        }
    }
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
