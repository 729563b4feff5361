//! What the emulated host did, for assertions and for people: a log in the host's own words
//! ("Executing 'Functions.X' ...", "Message has reached MaxDequeueCount ..."), every
//! invocation and every poison move. Each change bumps a version so waiters wake up instead of
//! sleeping for a fixed time.

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

#[derive(Default)]
struct Entries {
    log: Vec<String>,
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
        let line = format!("[{}] {}", timestamp(SystemTime::now()), line.as_ref());
        if self.echo {
            eprintln!("{line}");
        }
        self.with(|e| e.log.push(line));
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

    /// Records a finished invocation.
    pub fn invocation(&self, record: InvocationRecord) {
        self.with(|e| e.invocations.push(record));
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
