//! One worker process started the way the Functions host starts a custom handler: the
//! host's environment variables on a fresh port, then the readiness probe (`GET /` every
//! 25 ms until any HTTP answer, at most 30 s: `DefaultHttpWorkerService.IsWorkerReady`,
//! `HttpWorkerOptions.InitializationTimeout`, `WorkerConstants.WorkerReadyCheckPollingIntervalMilliseconds`).
//! Each output line is classified as the host records it ([`LogLevel::of`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ids::new_guid;

/// The host gives a custom handler this long to answer its readiness probe:
/// `HttpWorkerOptions.InitializationTimeout` defaults to 30 s in the host's code (the docs'
/// "60 seconds" is not what the code does).
pub const STARTUP_LIMIT: Duration = Duration::from_secs(30);

/// The version the emulator reports in `X-Azure-Functions-HostVersion` and `User-Agent`.
pub const HOST_VERSION: &str = "4.1036.1.23224";

/// How often the readiness probe is repeated while the worker is not listening yet.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

/// How many fresh ports a launch tries. The host passes the port in
/// `FUNCTIONS_CUSTOMHANDLER_PORT` and the worker binds it itself, so a port can be taken
/// between [`free_port`] releasing it and the worker binding it; the worker then exits saying
/// "address already in use", and the launch starts it again on another port. The real host
/// picks the port the same way (`WorkerUtilities.GetUnusedTcpPort`, bind port 0 and release,
/// called from `HttpWorkerOptionsSetup`), so it has the same race; how and when it starts a
/// worker again after such an exit is not confirmed (`docs/protocols.md` §8), and the
/// emulator's immediate retry is a test-harness convenience, not a claim about the host.
const PORT_ATTEMPTS: usize = 5;

/// How long a worker that exited may take to close its output pipes.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// Receives every line the worker writes, with the stream it came from.
pub type LineObserver = Arc<dyn Fn(OutputStream, &str) + Send + Sync>;

/// Which of the worker's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// The severity the host records a worker's output line at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Every stdout line.
    Information,
    /// A stderr line that contains "warn" in any case.
    Warning,
    /// Any other stderr line.
    Error,
}

impl LogLevel {
    /// How the host classifies a line: `WorkerProcess.OnOutputDataReceived` logs stdout at
    /// Information; `ParseErrorMessageAndLog` logs stderr at Warning when it contains "warn"
    /// (ordinal, case-insensitive), else at Error (`UseStdErrorStreamForErrorsOnly`, which
    /// `HttpWorkerDescription` sets for custom handlers).
    pub fn of(stream: OutputStream, line: &str) -> LogLevel {
        match stream {
            OutputStream::Stdout => LogLevel::Information,
            OutputStream::Stderr if line.to_ascii_lowercase().contains("warn") => LogLevel::Warning,
            OutputStream::Stderr => LogLevel::Error,
        }
    }
}

/// How to start a worker, as the host derives it from host.json
/// `customHandler.description` and the app settings.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments (`%NAME%` already expanded).
    pub args: Vec<String>,
    /// Its working directory; `None`: inherit.
    pub working_dir: Option<PathBuf>,
    /// `FUNCTIONS_APP_ROOT_PATH`.
    pub app_root: PathBuf,
    /// Variables added to the inherited environment (the app settings).
    pub env: Vec<(String, String)>,
    /// Variables removed from it (app settings whose value is empty: `func start` cannot set
    /// an empty variable, .NET deletes it instead).
    pub env_remove: Vec<String>,
}

/// A running handler process, started like the Functions host starts it.
pub struct HandlerProcess {
    child: Child,
    port: u16,
    output: Arc<Mutex<String>>,
    /// The threads reading the output pipes: finished once the process and its output ended.
    readers: Vec<std::thread::JoinHandle<()>>,
    client: reqwest::Client,
}

static INVOCATIONS: AtomicU64 = AtomicU64::new(1);

/// A free TCP port on loopback (bound, then released: another process may take it before the
/// caller binds it, see [`PORT_ATTEMPTS`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

impl HandlerProcess {
    /// Starts `binary` with the host's variables plus `env`, and waits until it answers `GET /`.
    /// Fails with the process's output if it exits or does not answer within [`STARTUP_LIMIT`].
    pub async fn start(binary: &Path, env: &[(&str, &str)]) -> Result<HandlerProcess, String> {
        let command = WorkerCommand {
            program: binary.to_path_buf(),
            args: Vec::new(),
            working_dir: None,
            app_root: binary.parent().unwrap_or(Path::new(".")).to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            env_remove: Vec::new(),
        };
        Self::launch(&command, None).await
    }

    /// Starts `command` on a free port with the host's variables (a new worker id each time)
    /// and runs the host's readiness probe; a worker that lost its port to another process
    /// is started again on a fresh one. Output lines go to `observer` when given (else to
    /// stderr when `TESTKIT_ECHO` is set), and are kept for [`HandlerProcess::output`].
    pub async fn launch(
        command: &WorkerCommand,
        observer: Option<LineObserver>,
    ) -> Result<HandlerProcess, String> {
        Self::launch_with_ports(command, observer, free_port).await
    }

    /// [`HandlerProcess::launch`] on the ports `next_port` hands out, one per attempt.
    pub async fn launch_with_ports(
        command: &WorkerCommand,
        observer: Option<LineObserver>,
        mut next_port: impl FnMut() -> u16,
    ) -> Result<HandlerProcess, String> {
        let mut attempt = 1;
        loop {
            let mut process = Self::launch_on(command, next_port(), observer.clone())?;
            match process.wait_ready(STARTUP_LIMIT).await {
                Ok(()) => return Ok(process),
                Err(_) if attempt < PORT_ATTEMPTS && process.lost_its_port().await => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Spawns `command` with the host's variables for `port`.
    fn launch_on(
        command: &WorkerCommand,
        port: u16,
        observer: Option<LineObserver>,
    ) -> Result<HandlerProcess, String> {
        let port_text = port.to_string();
        let worker_id = new_guid();
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args);
        if let Some(dir) = &command.working_dir {
            cmd.current_dir(dir);
        }
        for name in &command.env_remove {
            cmd.env_remove(name);
        }
        for (k, v) in &command.env {
            cmd.env(k, v);
        }
        cmd.env("FUNCTIONS_CUSTOMHANDLER_PORT", &port_text)
            .env("FUNCTIONS_HTTPWORKER_PORT", &port_text)
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", &worker_id)
            .env("FUNCTIONS_HTTPWORKER_ID", &worker_id)
            .env("FUNCTIONS_APP_ROOT_PATH", &command.app_root);
        Self::spawn(cmd, port, observer)
            .map_err(|e| format!("cannot start {}: {e}", command.program.display()))
    }

    /// Whether the process exited because its port was taken: it said "address already in
    /// use" (the OS's words for `EADDRINUSE`) before its output ended.
    async fn lost_its_port(&mut self) -> bool {
        if self.try_exit_status().is_none() {
            return false;
        }
        let deadline = Instant::now() + OUTPUT_DRAIN;
        while !self
            .readers
            .iter()
            .all(std::thread::JoinHandle::is_finished)
        {
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        self.output()
            .to_ascii_lowercase()
            .contains("address already in use")
    }

    /// The host's readiness probe: `GET /` until any HTTP answer.
    async fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "handler exited during start-up ({status}):\n{}",
                    self.output()
                ));
            }
            if self.client.get(self.url("/")).send().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "handler did not answer GET / within {limit:?}:\n{}",
                    self.output()
                ));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Runs `binary` with exactly `env` added (no host variables) until it exits, for
    /// start-up failures. Returns its status and output.
    pub fn run_to_exit(binary: &Path, env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String) {
        let mut cmd = Command::new(binary);
        cmd.args(args).env_remove("FUNCTIONS_CUSTOMHANDLER_PORT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("cannot run the handler binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, text)
    }

    fn spawn(
        mut cmd: Command,
        port: u16,
        observer: Option<LineObserver>,
    ) -> Result<HandlerProcess, String> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let echo = observer.is_none() && std::env::var_os("TESTKIT_ECHO").is_some();
        let (output, readers) = capture_output(&mut child, observer, echo.then_some("handler"));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HandlerProcess {
            child,
            port,
            output,
            readers,
            client,
        })
    }

    /// The port the handler listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Full URL of `path` on the handler.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// A request as the host forwards an HTTP-only function's request
    /// (`enableForwardingHttpRequest`): the original method, `/api/<function>` path and query
    /// (with the function key in `code`), plus the host's invocation headers.
    pub fn forward(&self, method: reqwest::Method, function: &str) -> reqwest::RequestBuilder {
        let n = INVOCATIONS.fetch_add(1, Ordering::Relaxed);
        self.client
            .request(
                method,
                self.url(&format!("/api/{function}?code=functionkey-secret-value")),
            )
            .header(
                "X-Azure-Functions-InvocationId",
                format!("00000000-0000-4000-8000-{n:012}"),
            )
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
    }

    /// The HTTP client used for requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as a process manager (or Ctrl-C) would. The Functions host never does:
    /// it stops workers with [`HandlerProcess::kill`].
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Kills the process at once (SIGKILL), as a crash does, and as the host stops a worker
    /// (`WorkerProcess.Dispose` calls `Process.Kill()`).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process has exited (reaping it).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit).await
    }
}

/// Waits for `child` to exit (reaping it), at most `limit`.
pub(crate) async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Collects every line `child` writes to stdout and stderr (a thread per pipe, returned), handing
/// each to `observer` and echoing it to stderr under `echo` as a prefix when given.
pub(crate) fn capture_output(
    child: &mut Child,
    observer: Option<LineObserver>,
    echo: Option<&'static str>,
) -> (Arc<Mutex<String>>, Vec<std::thread::JoinHandle<()>>) {
    let output = Arc::new(Mutex::new(String::new()));
    let pipes = [
        child.stdout.take().map(|p| {
            (
                OutputStream::Stdout,
                Box::new(p) as Box<dyn std::io::Read + Send>,
            )
        }),
        child.stderr.take().map(|p| {
            (
                OutputStream::Stderr,
                Box::new(p) as Box<dyn std::io::Read + Send>,
            )
        }),
    ];
    let mut readers = Vec::new();
    for (stream, pipe) in pipes.into_iter().flatten() {
        let sink = Arc::clone(&output);
        let observer = observer.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(prefix) = echo {
                    eprintln!("[{prefix}] {line}");
                }
                if let Some(observe) = &observer {
                    observe(stream, &line);
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        }));
    }
    (output, readers)
}

impl Drop for HandlerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
