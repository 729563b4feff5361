//! Runs the ACS recording emulator for the demo and the benchmarks.
//!
//! ```text
//! acs-emulator [--recording ID:SIZE[:FORMAT[:SEED]]]... [--fault ID=SPEC]... [--key BASE64]
//!              [--bearer TOKEN] [--sha256] [--resource-host NAME]
//! ```
//! SIZE takes `k`/`m`/`g` (KiB/MiB/GiB) suffixes; FORMAT is `mp4` (default), `mp3` or `wav`.
//! Fault SPECs, applied in order to the recording's next requests: `503:N` (N times 503 with
//! `Retry-After: 1`), `status:CODE`, `cut:BYTES`, `empty`, `html400`, `trickle:BYTES:MS`,
//! `ignore-range`. `--resource-host` names the resource as clients behind a proxy know it
//! (requests are signed for it; the connection string names `https://NAME/`). Prints one JSON line (endpoints, key, connection string, URLs per recording)
//! on stdout, then serves until killed.

use std::process::ExitCode;
use std::time::Duration;

use archiver_testkit::acs::{
    AcsEmulator, AcsEmulatorConfig, Fault, RecordingFormat, DEFAULT_HTML_400,
};
use base64::Engine as _;

struct RecordingArg {
    id: String,
    size: u64,
    format: RecordingFormat,
    seed: u64,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches("ib").trim_end_matches('b');
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("bad size `{s}`"))?;
    let factor = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("bad size unit in `{s}`")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

fn parse_recording(s: &str) -> Result<RecordingArg, String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() < 2 || parts.len() > 4 || parts[0].is_empty() {
        return Err(format!(
            "--recording `{s}`: expected ID:SIZE[:FORMAT[:SEED]]"
        ));
    }
    Ok(RecordingArg {
        id: parts[0].to_string(),
        size: parse_size(parts[1])?,
        format: parts
            .get(2)
            .map_or(Ok(RecordingFormat::Mp4), |f| f.parse())?,
        seed: parts.get(3).map_or(Ok(1), |n| {
            n.parse().map_err(|_| format!("bad seed in `{s}`"))
        })?,
    })
}

fn parse_faults(spec: &str) -> Result<Vec<Fault>, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let num = |i: usize| -> Result<u64, String> {
        parts
            .get(i)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("fault `{spec}` needs a number"))
    };
    Ok(match parts[0] {
        "503" => vec![Fault::unavailable(1); num(1).unwrap_or(1) as usize],
        "status" => vec![Fault::status(num(1)? as u16)],
        "cut" => vec![Fault::CutAfter(num(1)?)],
        "empty" => vec![Fault::EmptyOk],
        "html400" => vec![Fault::html_bad_request(DEFAULT_HTML_400)],
        "trickle" => vec![Fault::Trickle {
            chunk: num(1)? as usize,
            interval: Duration::from_millis(num(2)?),
        }],
        "ignore-range" => vec![Fault::IgnoreRange],
        _ => return Err(format!("unknown fault `{spec}`")),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("acs-emulator: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), String> {
    let mut config = AcsEmulatorConfig::default();
    let mut recordings = Vec::new();
    let mut faults = Vec::new();
    let mut with_sha = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--recording" => recordings.push(parse_recording(&value()?)?),
            "--fault" => {
                let v = value()?;
                let (id, spec) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--fault `{v}`: expected ID=SPEC"))?;
                faults.push((id.to_string(), parse_faults(spec)?));
            }
            "--key" => {
                config.access_key = base64::engine::general_purpose::STANDARD
                    .decode(value()?)
                    .map_err(|_| "--key must be base64".to_string())?
            }
            "--bearer" => config.bearer_token = Some(value()?),
            "--resource-host" => config.resource_host = Some(value()?),
            "--sha256" => with_sha = true,
            "-h" | "--help" => {
                println!("usage: acs-emulator [--recording ID:SIZE[:FORMAT[:SEED]]]... [--fault ID=SPEC]... [--key BASE64] [--bearer TOKEN] [--sha256] [--resource-host NAME]");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if recordings.is_empty() {
        recordings.push(parse_recording("demo-recording:16m")?);
    }

    let emulator = AcsEmulator::start(config)
        .await
        .map_err(|e| format!("cannot bind: {e}"))?;
    let mut listed = Vec::new();
    for r in &recordings {
        emulator.add_recording(&r.id, r.size, r.seed, r.format);
        let mut entry = serde_json::json!({
            "document_id": r.id,
            "size": r.size,
            "format": format!("{:?}", r.format),
            "preview_url": emulator.preview_url(&r.id),
            "preview_metadata_url": emulator.preview_metadata_url(&r.id),
            "content_url": emulator.content_url(&r.id),
            "metadata_url": emulator.metadata_url(&r.id),
            "delete_url": emulator.delete_url(&r.id),
        });
        if with_sha {
            let sha = emulator.expected_sha256(&r.id).unwrap_or_default();
            entry["sha256"] = sha
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into();
        }
        listed.push(entry);
    }
    for (id, list) in faults {
        emulator.push_faults(&id, list);
    }
    let line = serde_json::json!({
        "acs_endpoint": emulator.acs_endpoint(),
        "acs_authority": emulator.acs_authority(),
        "storage_authority": emulator.storage_authority(),
        "access_key": emulator.access_key_base64(),
        "connection_string": emulator.connection_string(),
        "extra_allowed_hosts": emulator.extra_allowed_hosts(),
        "recordings": listed,
    });
    println!("{line}");
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    emulator.stop().await;
    Ok(())
}
