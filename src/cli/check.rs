//! `archiver check`: the settings as a table, then each check on one line (`ok`, `FAILED`
//! with the cause, and the fix on the line below).

use std::fmt::Write as _;
use std::process::ExitCode;

use super::settings;
use super::term::Paint;
use crate::config::{Lookup, Settings};
use crate::preflight::{Finding, Status};
use crate::wiring;

/// One line of the checks: what was checked and how it came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// Usable.
    Ok(String),
    /// Not usable: the cause, then the fix.
    Failed { what: String, fix: String },
    /// Not checked, and why.
    Skipped(String),
}

impl From<Finding> for Line {
    fn from(f: Finding) -> Line {
        match f.status {
            Status::Ready(how) => Line::Ok(format!("{} {how}", f.subject)),
            Status::Problem { error, fix } => Line::Failed {
                what: format!("{}: {error}", f.subject),
                fix,
            },
        }
    }
}

/// The checks as printed: a fixed-width mark, the text, the fix indented below.
pub(crate) fn render(lines: &[Line], paint: Paint) -> String {
    let mut out = String::new();
    let mut previous_fix = None;
    for line in lines {
        let _ = match line {
            Line::Ok(what) => writeln!(out, "  {}      {what}", paint.good("ok")),
            Line::Failed { what, fix } => {
                // One cause (storage not running) often fails every check the same way.
                let shown = if previous_fix == Some(fix) {
                    "fix: as above".to_string()
                } else {
                    format!("fix: {fix}")
                };
                previous_fix = Some(fix);
                writeln!(
                    out,
                    "  {}  {what}\n          {}",
                    paint.bad("FAILED"),
                    paint.dim(&shown)
                )
            }
            Line::Skipped(what) => writeln!(out, "  {}       {what}", paint.dim("--")),
        };
    }
    let failed = lines
        .iter()
        .filter(|l| matches!(l, Line::Failed { .. }))
        .count();
    let checked = lines
        .iter()
        .filter(|l| !matches!(l, Line::Skipped(_)))
        .count();
    let _ = match failed {
        0 => writeln!(out, "\nAll {checked} checks passed."),
        n => writeln!(out, "\n{n} of {checked} checks failed."),
    };
    out
}

/// Runs the checks: 0 when all pass, 1 when one fails, 2 when the settings cannot be used.
pub(crate) async fn run(settings: &Settings, lookup: &impl Lookup, source: &str) -> ExitCode {
    let paint = Paint::stdout();
    println!("Settings ({source})");
    print!("{}", settings::table(&settings::rows(settings)));
    println!();
    let clients = match wiring::build_clients(settings, lookup) {
        Ok(c) => c,
        Err(e) => {
            println!("{} {e}", paint.bad("Cannot check:"));
            return ExitCode::from(2);
        }
    };

    println!("Checks");
    let mut lines = Vec::new();
    // The Functions host binds RecordingTransfer's trigger to the same connection.
    lines.push(match wiring::check_functions_host(settings) {
        Ok(()) => Line::Ok("queue trigger can bind to these storage settings".into()),
        Err(e) => Line::Failed {
            what: "queue trigger cannot bind to these storage settings".into(),
            fix: e.to_string(),
        },
    });
    if let Some(mut probe) = wiring::probe(settings, &clients) {
        probe.retry = Some(super::PROMPT_RETRY);
        lines.extend(probe.run().await.into_iter().map(Line::from));
    }
    // ACS has no harmless request to test a key with; the first download shows it.
    lines.push(Line::Skipped(
        "ACS not probed: it has no read-only call; the first download shows whether the key works"
            .into(),
    ));
    print!("{}", render(&lines, paint));
    if lines.iter().any(|l| matches!(l, Line::Failed { .. })) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_print_a_mark_the_cause_and_the_fix_below() {
        let lines = [
            Line::Ok("queue trigger can bind to these storage settings".into()),
            Line::Failed {
                what: "container `recordings`: connection refused at 127.0.0.1:10000 (retried 2 times over 1.3 s)".into(),
                fix: "start the storage emulator".into(),
            },
            Line::Failed {
                what: "queue `q`: connection refused at 127.0.0.1:10000".into(),
                fix: "start the storage emulator".into(),
            },
            Line::Skipped("ACS not probed".into()),
        ];
        let plain = render(&lines, Paint::decide(false, None));
        assert_eq!(
            plain,
            "  ok      queue trigger can bind to these storage settings\n\
             \x20 FAILED  container `recordings`: connection refused at 127.0.0.1:10000 (retried 2 times over 1.3 s)\n\
             \x20         fix: start the storage emulator\n\
             \x20 FAILED  queue `q`: connection refused at 127.0.0.1:10000\n\
             \x20         fix: as above\n\
             \x20 --       ACS not probed\n\
             \n2 of 3 checks failed.\n"
        );
        assert!(!plain.contains('\x1b'));
        let coloured = render(&lines, Paint::decide(true, None));
        assert!(coloured.contains("\x1b[1;31mFAILED\x1b[0m"), "{coloured}");
    }
}
