//! Starts the repo's pinned Azurite (root `package.json`, installed with `npm ci`) on free ports
//! with in-memory persistence, and stops it.
//!
//! - Ports: Azurite is asked for port 0 and reports the ports it bound, so there is no race
//!   between picking a free port and binding it.
//! - Readiness: [`Azurite::start`] returns once Azurite has printed that each service listens
//!   and the Blob port accepts connections; it never sleeps a fixed time.
//! - Strict mode (no `--loose`), API version check on: a header or version Azurite does not
//!   support fails the test instead of being ignored. In strict mode Azurite answers 500
//!   `FeatureNotSupported` to `x-ms-content-crc64`, so the archiver sends `Content-MD5`.
//! - Stopping: Azurite runs in its own process group under a small `sh` watchdog. Dropping
//!   [`Azurite`] kills the group; if the test process dies first (a panic in a `static`, a
//!   SIGKILL), the watchdog sees its stdin close and kills the group itself.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Azurite's built-in account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known key for [`ACCOUNT`] (published in the Azurite README).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The SAS version [`container_sas`] signs with (string-to-sign format of 2020-12-06 and later).
pub const SAS_VERSION: &str = "2021-08-06";

/// How long Azurite may take to come up before [`Azurite::start`] gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs Azurite in the background and kills its whole process group when its stdin (our end of
/// a pipe) closes, or when Azurite exits on its own (then it says so first).
const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null 2>&1 &
child=$!
{ read -r _ <&3; kill -KILL 0; } &
wait "$child"
echo "azurite exited with status $?"
kill -KILL 0
"#;

/// Why Azurite could not be started.
#[derive(Debug)]
pub enum AzuriteError {
    /// `node` is not on `PATH`, or too old.
    Node(String),
    /// `node_modules/.bin/azurite` is missing.
    NotInstalled {
        /// Where `npm ci` must run.
        repo_root: PathBuf,
    },
    /// The process could not be started.
    Spawn(std::io::Error),
    /// Azurite exited or did not report its ports in time; its output is attached.
    NotReady {
        /// What happened.
        reason: String,
        /// What Azurite printed.
        output: String,
    },
}

impl fmt::Display for AzuriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzuriteError::Node(detail) => write!(
                f,
                "Node.js 18+ is required to run Azurite for these tests ({detail}); install it, then run `npm ci` in the repo root"
            ),
            AzuriteError::NotInstalled { repo_root } => write!(
                f,
                "Azurite is not installed: run `npm ci` in the repo root ({})",
                repo_root.display()
            ),
            AzuriteError::Spawn(e) => write!(f, "cannot start Azurite: {e}"),
            AzuriteError::NotReady { reason, output } => {
                write!(f, "Azurite did not start: {reason}\n--- Azurite output ---\n{output}")
            }
        }
    }
}

impl std::error::Error for AzuriteError {}

/// A running Azurite (Blob, Queue and Table services) with in-memory storage.
pub struct Azurite {
    child: Child,
    /// Our end of the watchdog's stdin: dropping it (or dying) stops Azurite.
    lifeline: Option<ChildStdin>,
    blob_port: u16,
    queue_port: u16,
    table_port: u16,
    startup: Duration,
    _workdir: tempfile::TempDir,
}

impl fmt::Debug for Azurite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Azurite")
            .field("pid", &self.child.id())
            .field("blob_port", &self.blob_port)
            .field("queue_port", &self.queue_port)
            .finish()
    }
}

impl Azurite {
    /// Starts Azurite and waits until it listens. Blocks the calling thread (about 1-3 s), so
    /// call it before building a runtime, from `spawn_blocking`, or in a current-thread test.
    pub fn start() -> Result<Azurite, AzuriteError> {
        Self::start_with_args(&[])
    }

    /// [`Azurite::start`] with extra Azurite flags, e.g. `["--extentMemoryLimit", "512"]` or
    /// `["--loose"]`.
    pub fn start_with_args(extra: &[&str]) -> Result<Azurite, AzuriteError> {
        let began = Instant::now();
        check_node()?;
        let bin = find_azurite()?;
        let workdir = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .map_err(AzuriteError::Spawn)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("azurite-watchdog")
            .arg(&bin)
            .args([
                "--blobPort",
                "0",
                "--queuePort",
                "0",
                "--tablePort",
                "0",
                "--inMemoryPersistence",
                "--silent",
                "--disableTelemetry",
            ])
            .args(extra)
            .current_dir(workdir.path())
            .env_remove("AZURITE_ACCOUNTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(AzuriteError::Spawn)?;
        let lifeline = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");

        // Azurite's output is read on a thread for as long as it runs, so it never blocks on a
        // full pipe; the lines before readiness are kept for error messages.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Once nobody listens the send fails; keep draining all the same.
                let _ = tx.send(line);
            }
        });

        let mut azurite = Azurite {
            child,
            lifeline,
            blob_port: 0,
            queue_port: 0,
            table_port: 0,
            startup: Duration::ZERO,
            _workdir: workdir,
        };
        let mut output = String::new();
        let deadline = began + START_TIMEOUT;
        while azurite.blob_port == 0 || azurite.queue_port == 0 || azurite.table_port == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(AzuriteError::NotReady {
                        reason: format!("no ports reported within {START_TIMEOUT:?}"),
                        output,
                    })
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(AzuriteError::NotReady {
                        reason: "it exited".into(),
                        output,
                    })
                }
            };
            output.push_str(&line);
            output.push('\n');
            if line.starts_with("azurite exited") {
                return Err(AzuriteError::NotReady {
                    reason: line,
                    output,
                });
            }
            if let Some((service, port)) = listening_port(&line) {
                match service {
                    "Blob" => azurite.blob_port = port,
                    "Queue" => azurite.queue_port = port,
                    "Table" => azurite.table_port = port,
                    _ => {}
                }
            }
        }
        // The log line follows `listen()`, so this connects at once; it proves the port is ours.
        for port in [azurite.blob_port, azurite.queue_port] {
            if let Err(e) = TcpStream::connect(("127.0.0.1", port)) {
                return Err(AzuriteError::NotReady {
                    reason: format!("port {port} refuses connections: {e}"),
                    output,
                });
            }
        }
        azurite.startup = began.elapsed();
        Ok(azurite)
    }

    /// Path-style Blob endpoint, e.g. `http://127.0.0.1:41234/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.blob_port)
    }

    /// Path-style Queue endpoint.
    pub fn queue_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.queue_port)
    }

    /// The Blob service port.
    pub fn blob_port(&self) -> u16 {
        self.blob_port
    }

    /// The Queue service port.
    pub fn queue_port(&self) -> u16 {
        self.queue_port
    }

    /// The explicit form of `UseDevelopmentStorage=true`, on this instance's ports.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};\
             BlobEndpoint={};QueueEndpoint={};TableEndpoint=http://127.0.0.1:{}/{ACCOUNT};",
            self.blob_endpoint(),
            self.queue_endpoint(),
            self.table_port
        )
    }

    /// How long [`Azurite::start`] took, Node start-up included.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// A container SAS for this instance's account (see [`container_sas`]).
    pub fn container_sas(&self, container: &str, permissions: &str, ttl: Duration) -> String {
        container_sas(
            ACCOUNT,
            ACCOUNT_KEY,
            container,
            permissions,
            SystemTime::now() + ttl,
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals our child's process group, which
        // `process_group(0)` made separate from ours; it touches no memory.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }
}

/// `Azurite Blob service is successfully listening at http://127.0.0.1:41234` → ("Blob", 41234).
fn listening_port(line: &str) -> Option<(&str, u16)> {
    let rest = line.strip_prefix("Azurite ")?;
    let (service, rest) = rest.split_once(' ')?;
    let (_, url) = rest.split_once("successfully listening at ")?;
    let port = url
        .trim()
        .trim_end_matches('/')
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    Some((service, port))
}

fn check_node() -> Result<(), AzuriteError> {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| AzuriteError::Node(format!("`node --version` failed: {e}")))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: Option<u32> = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok());
    match major {
        Some(m) if m >= 18 => Ok(()),
        _ => Err(AzuriteError::Node(format!("found node `{version}`"))),
    }
}

/// `node_modules/.bin/azurite` in the nearest directory above the test's crate (or the current
/// directory) that has one; else an error naming the repo root (the top `package.json`).
fn find_azurite() -> Result<PathBuf, AzuriteError> {
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        starts.push(dir.into());
    }
    starts.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if let Ok(dir) = std::env::current_dir() {
        starts.push(dir);
    }
    find_azurite_from(&starts)
}

fn find_azurite_from(starts: &[PathBuf]) -> Result<PathBuf, AzuriteError> {
    let mut repo_root: Option<&Path> = None;
    for start in starts {
        for dir in start.ancestors() {
            let bin = dir.join("node_modules").join(".bin").join("azurite");
            if bin.is_file() {
                return Ok(bin);
            }
            if repo_root.is_none() && dir.join("package.json").is_file() {
                repo_root = Some(dir);
            }
        }
    }
    let fallback = starts.first().map(PathBuf::as_path);
    Err(AzuriteError::NotInstalled {
        repo_root: repo_root
            .or(fallback)
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    })
}

/// A service SAS for a whole container (`sr=c`), signed with the account key, as query
/// parameters without `?`: `sv=...&sr=c&sp=...&se=...&sig=...`.
///
/// String-to-sign for version 2020-12-06 and later, no trailing newline:
/// `sp\nst\nse\n/blob/{account}/{container}\nsi\nsip\nspr\nsv\nsr\nsnapshot\nses\nrscc\nrscd\nrsce\nrscl\nrsct`.
pub fn container_sas(
    account: &str,
    key_base64: &str,
    container: &str,
    permissions: &str,
    expiry: SystemTime,
) -> String {
    let se = iso8601(expiry);
    let to_sign = format!(
        "{permissions}\n\n{se}\n/blob/{account}/{container}\n\n\n\n{SAS_VERSION}\nc\n\n\n\n\n\n\n"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_base64)
        .expect("the account key is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "sv={SAS_VERSION}&sr=c&sp={permissions}&se={}&sig={}",
        query_encode(&se),
        query_encode(&sig)
    )
}

/// `2026-11-24T22:48:00Z`: seconds precision, UTC.
fn iso8601(t: SystemTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(t)
        .format(&format)
        .expect("a SystemTime formats")
}

fn query_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_give_ports() {
        assert_eq!(
            listening_port(
                "Azurite Blob service is successfully listening at http://127.0.0.1:40953"
            ),
            Some(("Blob", 40953))
        );
        assert_eq!(
            listening_port("Azurite Blob service is starting at http://127.0.0.1:0"),
            None
        );
    }

    #[test]
    fn missing_install_says_to_run_npm_ci_in_the_repo_root() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(repo.path().join("package.json"), "{}").unwrap();
        let crate_dir = repo.path().join("testkit");
        std::fs::create_dir(&crate_dir).unwrap();
        let err = find_azurite_from(&[crate_dir]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "Azurite is not installed: run `npm ci` in the repo root ({})",
                repo.path().display()
            )
        );
    }

    #[test]
    fn container_sas_has_the_documented_shape() {
        let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(1_650_000_000);
        let sas = container_sas(ACCOUNT, ACCOUNT_KEY, "recordings", "rcw", expiry);
        assert!(
            sas.starts_with("sv=2021-08-06&sr=c&sp=rcw&se=2022-04-15T05%3A20%3A00Z&sig="),
            "{sas}"
        );
        assert!(
            !sas["sv=".len()..].contains('+') && !sas.contains('/'),
            "{sas}"
        );
    }
}
