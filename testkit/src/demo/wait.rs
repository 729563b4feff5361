//! Waiting for `RecordingTransfer` to archive every chunk, and the handler's own words when it
//! did not.

use std::time::Instant;

use serde_json::Value;

use super::{DemoError, HEARTBEAT};
use crate::host::{FunctionsHost, InvocationRecord, InvocationStatus};

/// Waits until `chunks` queue invocations succeeded and the queues are drained, printing each
/// invocation as it ends. A poison message or the deadline fails; then the end of the host log
/// is printed too.
pub(super) async fn wait_for_archive(
    host: &FunctionsHost,
    chunks: usize,
    deadline: Instant,
) -> Result<(), DemoError> {
    let queue_functions: Vec<String> = host.queues().iter().map(|q| q.function.clone()).collect();
    let is_transfer = |i: &InvocationRecord| queue_functions.contains(&i.function);
    let mut shown = host.invocations().len();
    let waiting = Instant::now();
    loop {
        let invocations = host.invocations();
        for inv in invocations.iter().skip(shown).filter(|i| is_transfer(i)) {
            let outcome = match &inv.status {
                InvocationStatus::Succeeded => "succeeded".to_string(),
                InvocationStatus::Failed(why) => format!("FAILED: {}", failure_summary(why, 160)),
            };
            println!(
                "      {} try {} of message {}: {outcome} ({:.1} s)",
                inv.function,
                inv.dequeue_count.unwrap_or(1),
                inv.message_id.as_deref().unwrap_or("-"),
                inv.duration.as_secs_f64()
            );
        }
        shown = invocations.len();
        // A job that can never succeed is moved by the handler itself, at once.
        let moved = invocations.iter().filter(|i| is_transfer(i)).find_map(|i| {
            let queue = i.logs.iter().find_map(|l| l.strip_prefix("moved to "))?;
            let why = i.logs.iter().find(|l| l.starts_with("permanent:"));
            Some((queue, why.map_or("", String::as_str)))
        });
        if let Some((queue, why)) = moved {
            print_log_tail(host);
            return Err(DemoError::NotArchived(format!(
                "the handler moved a transfer job that can never succeed to `{queue}`: {}",
                failure_summary(why, 400)
            )));
        }
        if let Some(p) = host.poison_moves().first() {
            print_log_tail(host);
            return Err(DemoError::NotArchived(format!(
                "after {} tries the host moved a transfer job to `{}`: {}",
                p.dequeue_count,
                p.poison_queue,
                failure_summary(&p.reason, 400)
            )));
        }
        let done = invocations
            .iter()
            .filter(|i| is_transfer(i) && i.succeeded())
            .count();
        if done >= chunks {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            print_log_tail(host);
            return Err(DemoError::NotArchived(format!(
                "only {done} of {chunks} chunks were archived within {:.0} s",
                waiting.elapsed().as_secs_f64()
            )));
        }
        let changed = host
            .wait_for("an invocation to end", left.min(HEARTBEAT), |h| {
                h.invocations().len() > shown || !h.poison_moves().is_empty()
            })
            .await;
        if changed.is_err() && Instant::now() < deadline {
            println!(
                "      ... {done} of {chunks} archived, still transferring ({:.0} s)",
                waiting.elapsed().as_secs_f64()
            );
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if host.wait_until_idle(left).await.is_err() {
        print_log_tail(host);
        return Err(DemoError::NotArchived(
            "every chunk was archived, but the transfer queue did not drain in time".into(),
        ));
    }
    Ok(())
}

/// The handler's own words from a failed invocation: the `Logs` of its answer when the host
/// quoted them (`... Body: {"Logs": [...]}`), else the host's reason; at most `max` characters.
pub fn failure_summary(reason: &str, max: usize) -> String {
    let logs = reason.split_once("Body: ").and_then(|(head, body)| {
        let answer: Value = serde_json::from_str(body).ok()?;
        let logs: Vec<&str> = answer["Logs"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let status = head
            .split_once("success: ")
            .map_or("", |(_, s)| s.trim_end_matches(['.', ' ']));
        Some(format!("{status} {}", logs.join("; ")).trim().to_string())
    });
    let text = logs.unwrap_or_else(|| reason.to_string());
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The end of the host log (the handler's output included), for a failure.
fn print_log_tail(host: &FunctionsHost) {
    const LINES: usize = 12;
    const WIDTH: usize = 300;
    let log = host.log();
    println!("\n--- the last {LINES} lines of the host log (all of it: --verbose) ---");
    for line in &log[log.len().saturating_sub(LINES)..] {
        match line.char_indices().nth(WIDTH) {
            Some((cut, _)) => println!("{}...", &line[..cut]),
            None => println!("{line}"),
        }
    }
    println!("---");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_invocation_is_summed_up_in_the_handler_words() {
        let reason = r#"Response status code does not indicate success: 500 (Internal Server Error). Body: {"Logs":["permanent: chunk 1 (d1): download: 404 Not Found"],"Outputs":{},"ReturnValue":null}"#;
        assert_eq!(
            failure_summary(reason, 400),
            "500 (Internal Server Error) permanent: chunk 1 (d1): download: 404 Not Found"
        );
        assert_eq!(
            failure_summary("no answer from the worker: connection refused", 400),
            "no answer from the worker: connection refused"
        );
        let long = "x".repeat(1000);
        assert_eq!(failure_summary(&long, 400).len(), 403);
    }
}
