//! The worker supervisor: keeps one handler process running like the host's HTTP worker
//! channel does. When the process exits unexpectedly (crash, kill, or recycled after a
//! function timeout) it is started again on a new port and probed for readiness; invocations
//! wait for the new process, and those in flight on the old one fail.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::journal::Journal;
use super::process::{HandlerProcess, LineObserver, OutputStream, WorkerCommand, STARTUP_LIMIT};

/// Consecutive failed start-ups after which the supervisor gives up (the host shuts down
/// after repeated worker errors too).
const MAX_START_FAILURES: u32 = 3;
/// How often the supervisor checks whether the process is still alive.
const EXIT_POLL: Duration = Duration::from_millis(20);
/// How long the host waits for a killed worker to exit (`WorkerProcess.Dispose`).
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// A snapshot of the current worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Process id.
    pub pid: u32,
    /// The port it listens on (`FUNCTIONS_CUSTOMHANDLER_PORT`).
    pub port: u16,
    /// 1 for the first process, +1 per restart.
    pub generation: u64,
}

#[derive(Default)]
struct State {
    process: Option<HandlerProcess>,
    generation: u64,
    stopping: bool,
    failure: Option<String>,
    kill_reason: Option<String>,
}

/// The supervised worker.
pub(crate) struct Worker {
    command: WorkerCommand,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    journal: Arc<Journal>,
}

impl Worker {
    /// Starts the first process; fails like the host's start-up does when it cannot.
    pub async fn start(
        command: WorkerCommand,
        journal: Arc<Journal>,
    ) -> Result<Arc<Worker>, String> {
        let worker = Arc::new(Worker {
            command,
            state: Mutex::default(),
            changed: watch::Sender::new(0),
            journal,
        });
        let process = worker.launch(1).await?;
        worker.install(process, 1);
        Ok(worker)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn launch(&self, generation: u64) -> Result<HandlerProcess, String> {
        let journal = Arc::clone(&self.journal);
        let observer: LineObserver = Arc::new(move |stream: OutputStream, line: &str| {
            journal.worker_line(generation, stream, line)
        });
        self.journal.log(format!(
            "Starting worker process {} (generation {generation})",
            self.command.program.display()
        ));
        HandlerProcess::launch(&self.command, Some(observer)).await
    }

    fn install(&self, process: HandlerProcess, generation: u64) {
        self.journal.log(format!(
            "Worker process started and initialized (pid {}, port {}, generation {generation})",
            process.pid(),
            process.port()
        ));
        let mut state = self.state();
        state.process = Some(process);
        state.generation = generation;
        drop(state);
        self.changed.send_replace(generation);
    }

    /// The current process, if one is running (an exited one the supervisor has not replaced
    /// yet does not count: invocations wait for its successor, as the host's dispatcher does).
    pub fn info(&self) -> Option<WorkerInfo> {
        let mut state = self.state();
        let generation = state.generation;
        let process = state.process.as_mut()?;
        if process.try_exit_status().is_some() {
            return None;
        }
        Some(WorkerInfo {
            pid: process.pid(),
            port: process.port(),
            generation,
        })
    }

    /// The current process, waiting (at most [`STARTUP_LIMIT`]) while it is being restarted.
    pub async fn ready(&self) -> Result<WorkerInfo, String> {
        let deadline = tokio::time::Instant::now() + STARTUP_LIMIT;
        let mut changes = self.changed.subscribe();
        loop {
            if let Some(info) = self.info() {
                return Ok(info);
            }
            {
                let state = self.state();
                if let Some(failure) = &state.failure {
                    return Err(format!("the worker could not be restarted: {failure}"));
                }
                if state.stopping {
                    return Err("the host is stopping".into());
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(format!("no worker process within {STARTUP_LIMIT:?}")),
            }
        }
    }

    /// Kills the process of `generation` (any when `None`) at once, as a crash would; the
    /// supervisor then restarts it. Returns the killed pid.
    pub fn kill(&self, generation: Option<u64>, reason: &str) -> Option<u32> {
        let mut state = self.state();
        if generation.is_some_and(|g| g != state.generation) {
            return None;
        }
        state.kill_reason = Some(reason.to_string());
        let process = state.process.as_mut()?;
        let pid = process.pid();
        process.kill();
        Some(pid)
    }

    /// Watches the process and restarts it whenever it exits, until the host stops.
    pub async fn supervise(self: Arc<Self>) {
        let mut failures = 0;
        loop {
            tokio::time::sleep(EXIT_POLL).await;
            let (exited, generation) = {
                let mut state = self.state();
                if state.stopping {
                    return;
                }
                let exited = state
                    .process
                    .as_mut()
                    .and_then(HandlerProcess::try_exit_status);
                if exited.is_some() {
                    state.process = None;
                }
                (
                    exited.map(|s| (s, state.kill_reason.take())),
                    state.generation,
                )
            };
            let Some((status, reason)) = exited else {
                continue;
            };
            self.journal.log(match reason {
                Some(reason) => format!("Worker process (generation {generation}) was killed: {reason}. Restarting it"),
                None => format!("Worker process (generation {generation}) exited unexpectedly ({status}). Restarting it"),
            });
            self.changed.send_modify(|_| {});
            loop {
                if self.state().stopping {
                    return;
                }
                let started = Instant::now();
                match self.launch(generation + 1).await {
                    Ok(process) => {
                        if self.state().stopping {
                            return;
                        }
                        self.install(process, generation + 1);
                        failures = 0;
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        self.journal.log(format!(
                            "Worker process failed to start after {:?} (attempt {failures}): {e}",
                            started.elapsed()
                        ));
                        if failures >= MAX_START_FAILURES {
                            self.state().failure = Some(e);
                            self.journal.log(
                                "Exceeded worker restart retry count; no worker process is running",
                            );
                            self.changed.send_modify(|_| {});
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Stops the worker as the host does on shutdown: `WorkerProcess.Dispose` kills it
    /// (`Process.Kill()`, SIGKILL) and waits a second for it to exit. No SIGTERM, no drain:
    /// whatever the worker was doing stops mid-way. No restart follows.
    pub async fn stop(&self) {
        let process = {
            let mut state = self.state();
            state.stopping = true;
            state.process.take()
        };
        self.changed.send_modify(|_| {});
        if let Some(mut process) = process {
            process.kill();
            let status = process.wait_exit(EXIT_WAIT).await;
            self.journal.log(match status {
                Some(s) => format!("Worker process killed ({s})"),
                None => format!("Worker process has not exited despite waiting for {EXIT_WAIT:?}"),
            });
        }
    }

    /// Kills the worker at once and prevents restarts (for `Drop`).
    pub fn stop_now(&self) {
        let process = {
            let mut state = self.state();
            state.stopping = true;
            state.process.take()
        };
        drop(process);
    }
}
