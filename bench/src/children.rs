//! The processes the benchmark starts: the ACS emulator and one `handler` per row, each a
//! separate process so its CPU time and peak RSS are its own.
//!
//! None of them may outlive the benchmark. A [`Child`] is killed when dropped (normal end,
//! an error, a panic unwinding, Ctrl-C ending the run future), and asks the kernel to kill it
//! when the benchmark dies without unwinding (`PR_SET_PDEATHSIG`). That signal follows the
//! *thread* that spawned the child, so children are spawned from the thread that runs the
//! benchmark's main future, never from `spawn_blocking` threads, which come and go.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Output lines kept per child, for error messages.
const KEPT_LINES: usize = 60;
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);

/// A child process that is killed when dropped.
pub struct Child {
    name: &'static str,
    process: std::process::Child,
    output: Arc<Mutex<VecDeque<String>>>,
}

impl Child {
    /// Spawns `command` with piped output (and piped input when `stdin`). Stdout lines go to
    /// `lines` when given; every line is kept (the last [`KEPT_LINES`]) for [`Child::output`].
    fn spawn(
        name: &'static str,
        mut command: Command,
        lines: Option<mpsc::Sender<String>>,
        stdin: bool,
    ) -> Result<Child, String> {
        command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only makes one
        // async-signal-safe system call.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut process = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stdout) = process.stdout.take() {
            keep_lines(stdout, lines, Arc::clone(&output));
        }
        if let Some(stderr) = process.stderr.take() {
            keep_lines(stderr, None, Arc::clone(&output));
        }
        Ok(Child {
            name,
            process,
            output,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The last lines it printed.
    pub fn output(&self) -> String {
        let kept = self.output.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().map(|l| format!("  {l}\n")).collect()
    }

    /// `Some(reason)` if it has exited.
    fn exited(&mut self) -> Option<String> {
        match self.process.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}):\n{}",
                self.name,
                self.output()
            )),
            Ok(None) => None,
            Err(e) => Some(format!("{}: {e}", self.name)),
        }
    }
}

/// Reads `pipe` line by line on its own thread until it closes (so the child never blocks on
/// a full pipe), sending each line to `lines` and keeping the last [`KEPT_LINES`].
fn keep_lines(
    pipe: impl Read + Send + 'static,
    lines: Option<mpsc::Sender<String>>,
    kept: Arc<Mutex<VecDeque<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(tx) = &lines {
                let _ = tx.send(line.clone());
            }
            let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    });
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One recording the emulator serves.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Its document id.
    pub document_id: String,
    /// Its size in bytes.
    pub size: u64,
    /// The seed its content is generated from.
    pub seed: u64,
}

/// The running ACS emulator, as its start-up line describes it.
pub struct Emulator {
    child: Child,
    /// `ACS_CONNECTION_STRING` for it.
    pub connection_string: String,
    /// `ACS_EXTRA_ALLOWED_HOSTS` for it.
    pub extra_allowed_hosts: String,
    /// `127.0.0.1:<port>` of its storage host (where the content URLs point).
    pub storage_authority: String,
    /// Per recording: `(document id, content URL, metadata URL, delete URL)`.
    pub urls: Vec<(String, String, String, String)>,
}

impl Emulator {
    /// Starts `binary` serving `recordings` and waits (at most `limit`) for its JSON line;
    /// with `resource_host`, clients sign for that name (`--resource-host`).
    pub async fn start(
        binary: &Path,
        recordings: &[Recording],
        resource_host: Option<&str>,
        limit: Duration,
    ) -> Result<Emulator, String> {
        let mut command = Command::new(binary);
        if let Some(host) = resource_host {
            command.arg("--resource-host").arg(host);
        }
        for r in recordings {
            command
                .arg("--recording")
                .arg(format!("{}:{}:mp4:{}", r.document_id, r.size, r.seed));
        }
        let (tx, rx) = mpsc::channel();
        let mut child = Child::spawn("acs-emulator", command, Some(tx), false)?;
        let line = next_line(&mut child, &rx, limit).await?;
        let info: Value = serde_json::from_str(&line)
            .map_err(|e| format!("acs-emulator's start-up line is not JSON ({e}): {line}"))?;
        let text = |v: &Value, key: &str| -> Result<String, String> {
            v[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("acs-emulator's start-up line has no `{key}`: {line}"))
        };
        let mut urls = Vec::new();
        for r in info["recordings"].as_array().into_iter().flatten() {
            urls.push((
                text(r, "document_id")?,
                text(r, "content_url")?,
                text(r, "metadata_url")?,
                text(r, "delete_url")?,
            ));
        }
        Ok(Emulator {
            connection_string: text(&info, "connection_string")?,
            extra_allowed_hosts: text(&info, "extra_allowed_hosts")?,
            storage_authority: text(&info, "storage_authority")?,
            urls,
            child,
        })
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The URLs of one recording.
    pub fn urls_of(&self, document_id: &str) -> Option<(&str, &str, &str)> {
        self.urls
            .iter()
            .find(|(id, ..)| id == document_id)
            .map(|(_, c, m, d)| (c.as_str(), m.as_str(), d.as_str()))
    }
}

/// A running `handler`, listening on `port`.
pub struct Handler {
    child: Child,
    port: u16,
}

impl Handler {
    /// Starts `binary` with exactly `env` (plus the port the Functions host would give it)
    /// and waits, at most `limit`, until it answers the host's readiness probe `GET /`.
    pub async fn start(
        binary: &Path,
        env: &[(String, String)],
        http: &reqwest::Client,
        limit: Duration,
    ) -> Result<Handler, String> {
        let port = archiver_testkit::host::free_port();
        let mut command = Command::new(binary);
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string());
        let mut handler = Handler {
            child: Child::spawn("handler", command, None, false)?,
            port,
        };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(reason) = handler.child.exited() {
                return Err(reason);
            }
            if http.get(handler.url("/")).send().await.is_ok() {
                return Ok(handler);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "handler did not answer GET / within {limit:?}:\n{}",
                    handler.child.output()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The handler's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its last output lines.
    pub fn output(&self) -> String {
        self.child.output()
    }
}

/// The next line `child` prints on stdout (waiting at most `limit`), or why there is none.
async fn next_line(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
    limit: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        match lines.try_recv() {
            Ok(line) => return Ok(line),
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err(child
                    .exited()
                    .unwrap_or_else(|| format!("{} closed its output", child.name)))
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if let Some(reason) = child.exited() {
            return Err(reason);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} printed nothing within {limit:?}:\n{}",
                child.name,
                child.output()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The Python SDK pipeline (`bench/python/sdk_pipeline.py`), set up and waiting for `go`.
pub struct PythonPipeline {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// The script, carried in the binary so the benchmark runs from any directory.
const SDK_PIPELINE: &str = include_str!("../python/sdk_pipeline.py");

impl PythonPipeline {
    /// Starts `python` on the script with `settings` (JSON, see the script) and waits, at most
    /// `limit`, for it to print `ready`.
    pub async fn start(
        python: &Path,
        settings: &Value,
        limit: Duration,
    ) -> Result<PythonPipeline, String> {
        let mut command = Command::new(python);
        command
            .arg("-c")
            .arg(SDK_PIPELINE)
            .arg(settings.to_string());
        let (tx, rx) = mpsc::channel();
        let mut child = Child::spawn("python SDK pipeline", command, Some(tx), true)?;
        match next_line(&mut child, &rx, limit).await?.as_str() {
            "ready" => Ok(PythonPipeline { child, lines: rx }),
            other => Err(format!(
                "expected `ready`, got `{other}`:\n{}",
                child.output()
            )),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Starts the transfer and waits, at most `limit`, until it is done; the process stays
    /// alive (for /proc) until dropped.
    pub async fn go(&mut self, limit: Duration) -> Result<(), String> {
        let stdin = self
            .child
            .process
            .stdin
            .as_mut()
            .ok_or("the pipeline has no stdin")?;
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("python SDK pipeline: {e}"))?;
        match next_line(&mut self.child, &self.lines, limit)
            .await?
            .as_str()
        {
            "done" => Ok(()),
            other => Err(format!(
                "expected `done`, got `{other}`:\n{}",
                self.child.output()
            )),
        }
    }
}
