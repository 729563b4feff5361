//! Runs the `handler` binary the way the Azure Functions host does: the same environment
//! variables, the same readiness probe (`GET /` until any answer), the same forwarded requests
//! (`/api/<Function>` with the original query string and the host's invocation headers).
//!
//! What the host does and how we mirror it is listed in `azure-protocols.md` §4.2-§4.4.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The host gives a custom handler this long to answer its readiness probe.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// A running handler process, started like the Functions host starts it.
pub struct HandlerProcess {
    child: Child,
    port: u16,
    output: Arc<Mutex<String>>,
    client: reqwest::Client,
}

static INVOCATIONS: AtomicU64 = AtomicU64::new(1);

/// A free TCP port on loopback (bound, then released).
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
        let port = free_port();
        let port_text = port.to_string();
        let mut cmd = Command::new(binary);
        cmd.env("FUNCTIONS_CUSTOMHANDLER_PORT", &port_text)
            .env("FUNCTIONS_HTTPWORKER_PORT", &port_text)
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "b0a1c2d3-worker")
            .env("FUNCTIONS_HTTPWORKER_ID", "b0a1c2d3-worker")
            .env(
                "FUNCTIONS_APP_ROOT_PATH",
                binary.parent().unwrap_or(Path::new(".")),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut process = Self::spawn(cmd, port)?;
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(format!(
                    "handler exited during start-up ({status}):\n{}",
                    process.output()
                ));
            }
            if process.client.get(process.url("/")).send().await.is_ok() {
                return Ok(process);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "handler did not answer GET / within {STARTUP_LIMIT:?}:\n{}",
                    process.output()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
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

    fn spawn(mut cmd: Command, port: u16) -> Result<HandlerProcess, String> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the handler: {e}"))?;
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if std::env::var_os("TESTKIT_ECHO").is_some() {
                        eprintln!("[handler] {line}");
                    }
                    let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HandlerProcess {
            child,
            port,
            output,
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
            .header("X-Azure-Functions-HostVersion", "4.1036.1.23224")
            .header("User-Agent", "Azure-Functions-Host/4.1036.1.23224")
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

    /// Sends SIGTERM, as the host does when it recycles a worker.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HandlerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
