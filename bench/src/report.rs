//! Turns measurements into the printed table: throughput, ratio to the ceiling, CPU seconds
//! per GiB and peak RSS of the handler, and each target met or missed (pure).

use std::fmt::Write as _;
use std::time::Duration;

use archiver_testkit::procstat;

use crate::plan::{Destination, Hashing, RowKind, RowSpec, MIB};

/// Archive into Azurite, as a share of the raw ceiling.
pub const TARGET_RATIO: f64 = 0.95;
/// The handler's CPU seconds per GiB with hashing off.
pub const TARGET_CPU_OFF: f64 = 0.25;
/// Into the discarding sink with hashing off, MB/s.
pub const TARGET_DISCARD_OFF_MBPS: f64 = 1000.0;
/// Into the discarding sink with MD5 and SHA-256, MB/s.
pub const TARGET_DISCARD_BOTH_MBPS: f64 = 500.0;
/// Peak RSS of the handler for the big chunk, bytes.
pub const TARGET_PEAK_RSS: u64 = 64 * MIB;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The handler's own cost for one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU time (user + system, all threads) during the transfer.
    pub cpu: Duration,
    /// `VmHWM` at the end (a fresh process per row, so it is this row's peak).
    pub peak_rss: u64,
}

/// The CPU time of a measured process (the handler, or the Python pipeline) and of the ACS
/// emulator, and the machine's counters, at one moment: one before a row and one after.
pub struct Sample {
    ours: Duration,
    emulator: Duration,
    machine: procstat::MachineSample,
}

impl Sample {
    /// Reads them now.
    pub fn take(pid: u32, emulator_pid: u32) -> Result<Sample, String> {
        let cpu =
            |pid| procstat::process_cpu(pid).map_err(|e| format!("CPU of process {pid}: {e}"));
        Ok(Sample {
            ours: cpu(pid)?,
            emulator: cpu(emulator_pid)?,
            machine: procstat::machine().map_err(|e| e.to_string())?,
        })
    }

    /// The row measured from this sample to `after`, with the process's peak RSS read now.
    pub fn until(
        &self,
        after: &Sample,
        pid: u32,
        elapsed: Duration,
        check: Result<(), String>,
    ) -> Result<Measurement, String> {
        let peak_rss =
            procstat::peak_rss(pid).map_err(|e| format!("peak RSS of process {pid}: {e}"))?;
        Ok(Measurement {
            elapsed,
            ours: Some(Usage {
                cpu: after.ours.saturating_sub(self.ours),
                peak_rss,
            }),
            emulator_cpu: Some(after.emulator.saturating_sub(self.emulator)),
            busy_cores: after.machine.busy_cores_since(&self.machine),
            check,
        })
    }
}

/// What was measured for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// From the request (or first Put Block) to the answer (or commit).
    pub elapsed: Duration,
    /// The handler's CPU and memory (archive rows).
    pub ours: Option<Usage>,
    /// The ACS emulator's CPU time during the row.
    pub emulator_cpu: Option<Duration>,
    /// Average cores busy on the whole machine during the row.
    pub busy_cores: f64,
    /// Whether the result checked out (size, and SHA-256 when computed).
    pub check: Result<(), String>,
}

impl Measurement {
    /// MB/s (10^6 bytes per second) for `bytes`.
    pub fn mbps(&self, bytes: u64) -> f64 {
        bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// One target for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What was asked, e.g. `ratio>=0.95`.
    pub target: String,
    /// Whether it was met.
    pub pass: bool,
}

/// The targets that apply to `spec`, judged on `m`; `ceiling` is the best ceiling in MB/s.
pub fn verdicts(spec: &RowSpec, m: &Measurement, ceiling: Option<f64>) -> Vec<Verdict> {
    let RowKind::Archive { dest, hashing } = spec.kind else {
        return Vec::new();
    };
    let ok = m.check.is_ok();
    let mbps = m.mbps(spec.size);
    let mut out = Vec::new();
    let mut judge = |target: String, pass: bool| {
        out.push(Verdict {
            target,
            pass: ok && pass,
        })
    };
    if dest == Destination::Azurite {
        let ratio = ceiling.map(|c| mbps / c);
        judge(
            format!("x ceiling>={TARGET_RATIO}"),
            ratio.is_some_and(|r| r >= TARGET_RATIO),
        );
    }
    if hashing == Hashing::OFF {
        judge(
            format!("CPU<={TARGET_CPU_OFF}"),
            m.ours
                .is_some_and(|u| cpu_per_gib(u.cpu, spec.size) <= TARGET_CPU_OFF),
        );
    }
    if dest == Destination::Discard && hashing == Hashing::OFF {
        judge(
            format!("MB/s>={TARGET_DISCARD_OFF_MBPS}"),
            mbps >= TARGET_DISCARD_OFF_MBPS,
        );
    }
    if dest == Destination::Discard && hashing == Hashing::BOTH {
        judge(
            format!("MB/s>={TARGET_DISCARD_BOTH_MBPS}"),
            mbps >= TARGET_DISCARD_BOTH_MBPS,
        );
    }
    if spec.rss_target {
        judge(
            format!("RSS<={}MiB", TARGET_PEAK_RSS / MIB),
            m.ours.is_some_and(|u| u.peak_rss <= TARGET_PEAK_RSS),
        );
    }
    out
}

/// The verdict footer of a table: every missed target, one per line, or that all were met.
pub fn write_misses(out: &mut String, misses: &[String]) {
    if misses.is_empty() {
        let _ = writeln!(out, "\nall targets met");
    } else {
        let _ = writeln!(out, "\ntargets missed:");
        for miss in misses {
            let _ = writeln!(out, "  {miss}");
        }
    }
}

/// CPU seconds per GiB moved.
pub fn cpu_per_gib(cpu: Duration, bytes: u64) -> f64 {
    cpu.as_secs_f64() / (bytes as f64 / GIB)
}

fn median<T: Copy>(values: &mut [T], cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Option<T> {
    values.sort_by(cmp);
    values.get(values.len() / 2).copied()
}

/// A row's typical run: the median of each figure over its runs, except the peak RSS (the
/// highest) and the check (the first failure).
pub fn summarize(runs: &[Measurement]) -> Option<Measurement> {
    let mut elapsed: Vec<Duration> = runs.iter().map(|m| m.elapsed).collect();
    let mut cpu: Vec<Duration> = runs.iter().filter_map(|m| m.ours.map(|u| u.cpu)).collect();
    let mut emulator: Vec<Duration> = runs.iter().filter_map(|m| m.emulator_cpu).collect();
    let mut busy: Vec<f64> = runs.iter().map(|m| m.busy_cores).collect();
    let peak_rss = runs.iter().filter_map(|m| m.ours.map(|u| u.peak_rss)).max();
    Some(Measurement {
        elapsed: median(&mut elapsed, Ord::cmp)?,
        ours: median(&mut cpu, Ord::cmp)
            .zip(peak_rss)
            .map(|(cpu, peak_rss)| Usage { cpu, peak_rss }),
        emulator_cpu: median(&mut emulator, Ord::cmp),
        busy_cores: median(&mut busy, f64::total_cmp)?,
        check: runs
            .iter()
            .find_map(|m| m.check.clone().err())
            .map_or(Ok(()), Err),
    })
}

/// The ceiling (the median of its runs, when they all checked out), in MB/s.
pub fn ceiling_mbps(rows: &[(RowSpec, Vec<Measurement>)]) -> Option<f64> {
    rows.iter()
        .filter(|(s, _)| s.kind == RowKind::Ceiling)
        .filter_map(|(s, runs)| Some((s, summarize(runs)?)))
        .filter(|(_, m)| m.check.is_ok())
        .map(|(s, m)| m.mbps(s.size))
        .max_by(f64::total_cmp)
}

/// The table, one line per row (medians over its runs, with the range of MB/s), then the
/// targets missed (if any) and failed checks.
pub fn render(rows: &[(RowSpec, Vec<Measurement>)]) -> String {
    let ceiling = ceiling_mbps(rows);
    let width = rows.iter().map(|(s, _)| s.label.len()).max().unwrap_or(10);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>8}  {:>6}  {:>11}  {:>6}  {:>9}  {:>7}  {:>9}  {:>5}  {:<5}  targets",
        "row",
        "size MiB",
        "MB/s",
        "(range)",
        "x ceil",
        "CPU s/GiB",
        "RSS MiB",
        "emu s/GiB",
        "busy",
        "check"
    );
    let mut misses = Vec::new();
    let mut failures = Vec::new();
    for (spec, runs) in rows {
        let Some(m) = summarize(runs) else { continue };
        let mbps = m.mbps(spec.size);
        let range = {
            let each = runs.iter().map(|r| r.mbps(spec.size));
            let lo = each.clone().fold(f64::INFINITY, f64::min);
            let hi = each.fold(0.0, f64::max);
            if runs.len() > 1 {
                format!("({lo:.0}-{hi:.0})")
            } else {
                String::new()
            }
        };
        let ratio = match (spec.kind, ceiling) {
            (RowKind::Ceiling, Some(c))
            | (
                RowKind::Archive {
                    dest: Destination::Azurite,
                    ..
                },
                Some(c),
            ) => format!("{:.2}", mbps / c),
            _ => "-".into(),
        };
        let cpu = m.ours.map_or("-".into(), |u| {
            format!("{:.2}", cpu_per_gib(u.cpu, spec.size))
        });
        let rss = m.ours.map_or("-".into(), |u| {
            format!("{:.1}", u.peak_rss as f64 / MIB as f64)
        });
        let emu = m
            .emulator_cpu
            .map_or("-".into(), |c| format!("{:.2}", cpu_per_gib(c, spec.size)));
        let verdicts = verdicts(spec, &m, ceiling);
        let targets: Vec<String> = verdicts
            .iter()
            .map(|v| format!("{} {}", v.target, if v.pass { "PASS" } else { "MISS" }))
            .collect();
        for v in verdicts.iter().filter(|v| !v.pass) {
            misses.push(format!("{}: {}", spec.label, v.target));
        }
        if let Err(e) = &m.check {
            failures.push(format!("{}: {e}", spec.label));
        }
        let _ = writeln!(
            out,
            "{:<width$}  {:>8}  {:>6.0}  {:>11}  {:>6}  {:>9}  {:>7}  {:>9}  {:>5.2}  {:<5}  {}",
            spec.label,
            spec.size / MIB,
            mbps,
            range,
            ratio,
            cpu,
            rss,
            emu,
            m.busy_cores,
            if m.check.is_ok() { "ok" } else { "FAIL" },
            targets.join(", ")
        );
    }
    write_misses(&mut out, &misses);
    for failure in &failures {
        let _ = writeln!(out, "FAILED {failure}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: RowKind, rss_target: bool) -> RowSpec {
        RowSpec {
            label: "r".into(),
            kind,
            size: 1024 * MIB,
            rss_target,
        }
    }

    fn measured(secs: f64, cpu: f64, rss_mib: u64) -> Measurement {
        Measurement {
            elapsed: Duration::from_secs_f64(secs),
            ours: Some(Usage {
                cpu: Duration::from_secs_f64(cpu),
                peak_rss: rss_mib * MIB,
            }),
            emulator_cpu: None,
            busy_cores: 1.0,
            check: Ok(()),
        }
    }

    const AZURITE_OFF: RowKind = RowKind::Archive {
        dest: Destination::Azurite,
        hashing: Hashing::OFF,
    };
    const DISCARD_BOTH: RowKind = RowKind::Archive {
        dest: Destination::Discard,
        hashing: Hashing::BOTH,
    };

    #[test]
    fn archive_into_azurite_is_judged_against_the_best_ceiling() {
        let ceiling = Some(1024.0 * MIB as f64 / 4.0 / 1e6);
        let fast = verdicts(&row(AZURITE_OFF, false), &measured(4.1, 0.2, 30), ceiling);
        assert_eq!(
            fast,
            vec![
                Verdict {
                    target: "x ceiling>=0.95".into(),
                    pass: true
                },
                Verdict {
                    target: "CPU<=0.25".into(),
                    pass: true
                }
            ]
        );
        let slow = verdicts(&row(AZURITE_OFF, false), &measured(5.0, 0.3, 30), ceiling);
        assert!(slow.iter().all(|v| !v.pass), "{slow:?}");
        let unknown = verdicts(&row(AZURITE_OFF, false), &measured(4.0, 0.2, 30), None);
        assert!(!unknown[0].pass, "no ceiling, no pass");
    }

    #[test]
    fn a_failed_check_fails_every_target_of_its_row() {
        let mut m = measured(0.5, 0.1, 30);
        m.check = Err("size mismatch".into());
        let v = verdicts(&row(DISCARD_BOTH, true), &m, Some(100.0));
        assert_eq!(v.len(), 2, "MB/s and RSS apply: {v:?}");
        assert!(v.iter().all(|v| !v.pass));
        let table = render(&[(row(DISCARD_BOTH, true), vec![measured(0.4, 0.1, 30), m])]);
        assert!(table.contains("FAIL"), "{table}");
        assert!(table.contains("FAILED r: size mismatch"), "{table}");
    }

    #[test]
    fn the_table_shows_medians_ratios_cpu_and_rss() {
        let ceiling = Measurement {
            ours: None,
            ..measured(4.0, 0.0, 0)
        };
        let rows = vec![
            (
                row(RowKind::Ceiling, false),
                vec![ceiling.clone(), ceiling.clone(), ceiling],
            ),
            (
                row(AZURITE_OFF, false),
                vec![
                    measured(8.0, 0.5, 40),
                    measured(9.0, 0.7, 44),
                    measured(4.0, 0.1, 30),
                ],
            ),
            (row(DISCARD_BOTH, true), vec![measured(1.0, 2.0, 80)]),
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].contains(" 1.00 "), "{table}");
        // Median time 8 s (half the ceiling's speed), median CPU 0.5 s, highest RSS 44 MiB.
        assert!(
            lines[2].contains(" 0.50 ") && lines[2].contains("0.50"),
            "{table}"
        );
        assert!(
            lines[2].contains("44.0") && lines[2].contains("(119-268)"),
            "{table}"
        );
        assert!(
            lines[3].contains("80.0") && lines[3].contains("RSS<=64MiB MISS"),
            "{table}"
        );
        assert!(table.contains("targets missed:"), "{table}");
    }
}
