//! What the emulated host did, for assertions and for people: a log in the host's own words
//! ("Executing 'Functions.X' ...", "Message has reached MaxDequeueCount ..."), every
//! invocation and every poison move. Each change bumps a version so waiters wake up instead of
//! sleeping for a fixed time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::process::{LogLevel, OutputStream};

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationStatus {
    /// A 2xx answer (queue trigger), or any answer (forwarded HTTP request).
    Succeeded,
    /// A non-2xx answer, an unreadable answer, no answer (worker down or crashed), or the
    /// function timeout; the text says which.
    Failed(String),
}

/// One invocation of a function by the emulated host.
#[derive(Debug, Clone)]
pub struct InvocationRecord {
    /// The function (folder) name.
    pub function: String,
    /// `X-Azure-Functions-InvocationId`.
    pub invocation_id: String,
    /// The queue message id (queue triggers).
    pub message_id: Option<String>,
    /// The message's dequeue count for this attempt (queue triggers).
    pub dequeue_count: Option<u32>,
    /// The worker's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// How it ended.
    pub status: InvocationStatus,
    /// When the invocation started.
    pub started: SystemTime,
    /// From sending the request to the end of the answer (or the failure).
    pub duration: Duration,
    /// Which worker process served it: 1 for the first, +1 per restart.
    pub worker_generation: u64,
    /// The `Logs` of the worker's answer (queue triggers), which the host copies to its log:
    /// a 2xx answer's only, since the host reads no body after a failure status.
    pub logs: Vec<String>,
}

impl InvocationRecord {
    /// Whether it succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == InvocationStatus::Succeeded
    }
}

/// A line a worker wrote, as the host records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLine {
    /// Which worker process wrote it: 1 for the first, +1 per restart.
    pub generation: u64,
    /// The severity the host gives it (stdout: Information; stderr: Warning or Error).
    pub level: LogLevel,
    /// The line.
    pub text: String,
}

/// A message moved to a poison queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoisonRecord {
    /// The function whose trigger queue held it.
    pub function: String,
    /// The trigger queue.
    pub queue: String,
    /// `<queue>-poison`.
    pub poison_queue: String,
    /// The message id in the trigger queue.
    pub message_id: String,
    /// Its dequeue count when moved.
    pub dequeue_count: u32,
    /// Why: the last failure, or why it was not invoked at all.
    pub reason: String,
}

/// A queue-triggered invocation that has started and not ended, for reports of what a stuck
/// host is doing.
#[derive(Debug, Clone)]
pub(crate) struct RunningInvocation {
    /// The function (folder) name.
    pub function: String,
    /// The queue message and its dequeue count.
    pub trigger: String,
    /// When it started.
    pub started: SystemTime,
}

#[derive(Default)]
struct Entries {
    log: Vec<String>,
    /// By invocation id.
    running: BTreeMap<String, RunningInvocation>,
    /// The log lines of queue operations that failed.
    queue_failures: Vec<String>,
    worker_output: String,
    worker_lines: Vec<WorkerLine>,
    invocations: Vec<InvocationRecord>,
    poison: Vec<PoisonRecord>,
}

/// The shared record of one emulated host.
pub(crate) struct Journal {
    entries: Mutex<Entries>,
    version: watch::Sender<u64>,
    echo: bool,
}

impl Journal {
    /// A journal; `echo` also prints every log line to stderr.
    pub fn new(echo: bool) -> Self {
        Journal {
            entries: Mutex::default(),
            version: watch::Sender::new(0),
            echo,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Entries) -> R) -> R {
        let r = f(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()));
        self.version.send_modify(|v| *v += 1);
        r
    }

    /// Appends a host log line, time-stamped like `func start` prints it.
    pub fn log(&self, line: impl AsRef<str>) {
        let line = self.stamped(line.as_ref());
        self.with(|e| e.log.push(line));
    }

    /// Logs a queue operation that failed (a poll, a delete, a release, a renewal, a move to
    /// the poison queue), and keeps it for [`Journal::running_report`]: such a failure can
    /// leave a message locked with nobody running it.
    pub fn queue_failed(&self, line: impl AsRef<str>) {
        let line = self.stamped(line.as_ref());
        self.with(|e| {
            e.queue_failures.push(line.clone());
            e.log.push(line)
        });
    }

    /// `line` time-stamped like `func start` prints it (and echoed when asked).
    fn stamped(&self, line: &str) -> String {
        let line = format!("[{}] {line}", timestamp(SystemTime::now()));
        if self.echo {
            eprintln!("{line}");
        }
        line
    }

    /// Appends a line the worker wrote, at the severity the host records it (also to the
    /// log, like `func start` shows it).
    pub fn worker_line(&self, generation: u64, stream: OutputStream, line: &str) {
        let level = LogLevel::of(stream, line);
        self.with(|e| {
            e.worker_output.push_str(line);
            e.worker_output.push('\n');
            e.worker_lines.push(WorkerLine {
                generation,
                level,
                text: line.to_string(),
            });
        });
        self.log(format!("[worker {generation}] [{level:?}] {line}"));
    }

    /// Records a queue-triggered invocation that has started.
    pub fn started(&self, invocation_id: &str, running: RunningInvocation) {
        self.with(|e| e.running.insert(invocation_id.to_string(), running));
    }

    /// Records a finished invocation.
    pub fn invocation(&self, record: InvocationRecord) {
        self.with(|e| {
            e.running.remove(&record.invocation_id);
            e.invocations.push(record)
        });
    }

    /// What is still running, and for each the last lines its worker wrote about it (the
    /// worker's log lines name the invocation id): what a report of a stuck host ends with.
    pub fn running_report(&self, lines_each: usize) -> String {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = String::new();
        let failed = &entries.queue_failures;
        if !failed.is_empty() {
            report.push_str("queue operations that failed (the last 10):\n");
            for line in &failed[failed.len().saturating_sub(10)..] {
                report.push_str(&format!("    {line}\n"));
            }
        }
        if entries.running.is_empty() {
            report.push_str("no invocation running");
            return report;
        }
        for (id, r) in &entries.running {
            let seconds = r.started.elapsed().unwrap_or_default().as_secs_f64();
            report.push_str(&format!(
                "running for {seconds:.1} s: Functions.{} Id={id} ({}); its worker's last lines:\n",
                r.function, r.trigger
            ));
            let about: Vec<&WorkerLine> = entries
                .worker_lines
                .iter()
                .filter(|l| l.text.contains(id.as_str()))
                .collect();
            for line in &about[about.len().saturating_sub(lines_each)..] {
                report.push_str(&format!("    [worker {}] {}\n", line.generation, line.text));
            }
        }
        report
    }

    /// Records a poison move.
    pub fn poisoned(&self, record: PoisonRecord) {
        self.with(|e| e.poison.push(record));
    }

    /// Every log line so far.
    pub fn lines(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .clone()
    }

    /// Everything every worker process wrote.
    pub fn worker_output(&self) -> String {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .worker_output
            .clone()
    }

    /// Every line every worker wrote, with its severity.
    pub fn worker_lines(&self) -> Vec<WorkerLine> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .worker_lines
            .clone()
    }

    /// Every finished invocation so far.
    pub fn invocations(&self) -> Vec<InvocationRecord> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .invocations
            .clone()
    }

    /// Every poison move so far.
    pub fn poison_moves(&self) -> Vec<PoisonRecord> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poison
            .clone()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// `2025-11-24T22:56:00.123Z`.
pub(crate) fn timestamp(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_report_names_what_has_not_ended_with_its_workers_last_lines() {
        let journal = Journal::new(false);
        journal.started(
            "inv-1",
            RunningInvocation {
                function: "RecordingTransfer".into(),
                trigger: "queue 'jobs', message m-1, dequeue count 2".into(),
                started: SystemTime::now(),
            },
        );
        for n in 0..7 {
            journal.worker_line(
                2,
                OutputStream::Stdout,
                &format!("invocation=inv-1 step {n}"),
            );
        }
        journal.worker_line(2, OutputStream::Stdout, "invocation=inv-2 other");
        journal.log(
            "Message has reached MaxDequeueCount of 5. Moving message to queue 'jobs-poison'.",
        );
        journal.queue_failed(
            "Unable to delete queue message: Delete Message on queue `jobs`: connection closed",
        );
        let report = journal.running_report(5);
        assert!(
            report.contains("queue operations that failed (the last 10):\n    ["),
            "{report}"
        );
        assert!(
            report.contains("Unable to delete") && !report.contains("MaxDequeueCount"),
            "{report}"
        );
        assert!(
            report.contains(
                "Functions.RecordingTransfer Id=inv-1 (queue 'jobs', message m-1, dequeue count 2)"
            ),
            "{report}"
        );
        assert!(
            report.contains("step 6") && report.contains("step 2"),
            "{report}"
        );
        assert!(
            !report.contains("step 1") && !report.contains("inv-2"),
            "{report}"
        );

        journal.invocation(InvocationRecord {
            function: "RecordingTransfer".into(),
            invocation_id: "inv-1".into(),
            message_id: Some("m-1".into()),
            dequeue_count: Some(2),
            http_status: Some(200),
            status: InvocationStatus::Succeeded,
            started: SystemTime::now(),
            duration: Duration::ZERO,
            worker_generation: 2,
            logs: Vec::new(),
        });
        assert!(journal.running_report(5).ends_with("no invocation running"));
    }
}
