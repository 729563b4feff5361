//! Settings, read once from the environment at start-up and validated there.
//!
//! Every setting the app reads is named in this module (and documented in
//! `local.settings.json.example` and the README). Values come through a lookup function so tests
//! inject them without touching the process environment. Secrets live in [`Secret`], whose
//! `Debug` and `Display` print `***`.

pub mod acs;
pub mod archive;
pub mod front;
pub mod naming;
pub mod storage;

use std::fmt;
use std::str::FromStr;

pub use acs::AcsSettings;
pub use archive::ArchiveSettings;
pub use front::{ServerLimits, WebhookAuth, WebhookKeys};
pub use naming::BlobNameTemplate;
pub use storage::StorageSettings;

/// The port the Functions host tells a custom handler to listen on.
pub const PORT: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
/// Where archives go (connection string, or the `RECORDINGS_STORAGE__*` identity settings).
pub const RECORDINGS_STORAGE: &str = "RECORDINGS_STORAGE";
/// Blob container for the archives.
pub const RECORDINGS_CONTAINER: &str = "RECORDINGS_CONTAINER";
/// `queue` (webhook enqueues, `RecordingTransfer` archives) or `inline`.
pub const ARCHIVE_MODE: &str = "ARCHIVE_MODE";
/// Queue the webhook enqueues transfer jobs on.
pub const TRANSFER_QUEUE: &str = "TRANSFER_QUEUE";
/// How queue message text is encoded: must match host.json `messageEncoding`.
pub const TRANSFER_MESSAGE_ENCODING: &str = "TRANSFER_MESSAGE_ENCODING";
/// Largest webhook body accepted, in bytes.
pub const WEBHOOK_MAX_BODY_BYTES: &str = "WEBHOOK_MAX_BODY_BYTES";
/// Size of each staged block, in bytes.
pub const TRANSFER_BLOCK_BYTES: &str = "TRANSFER_BLOCK_BYTES";
/// Blocks uploaded at once per chunk.
pub const TRANSFER_PARALLEL_BLOCKS: &str = "TRANSFER_PARALLEL_BLOCKS";
/// Ranged reads from ACS at once per chunk.
pub const TRANSFER_PARALLEL_RANGES: &str = "TRANSFER_PARALLEL_RANGES";
/// Send `Content-MD5` with every block.
pub const TRANSFER_CONTENT_MD5: &str = "TRANSFER_CONTENT_MD5";
/// Compute the whole chunk's SHA-256 for the archive record.
pub const TRANSFER_SHA256: &str = "TRANSFER_SHA256";
/// Delete recordings from ACS once every chunk is archived and verified.
pub const DELETE_AFTER_ARCHIVE: &str = "DELETE_AFTER_ARCHIVE";
/// `text` (default) or `json` log lines.
pub const LOG_FORMAT: &str = "LOG_FORMAT";

/// Default container name.
pub(crate) const DEFAULT_CONTAINER: &str = "recordings";
/// Default transfer queue name.
pub(crate) const DEFAULT_TRANSFER_QUEUE: &str = "recording-transfers";
/// Event Grid sends at most about 1 MB per delivery (a batch stops growing at its preferred size,
/// at most 1024 KB, and a single event is at most 1 MB). Twice that leaves room for JSON escaping
/// and for whatever the Functions host adds, while still refusing absurd bodies.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How chunks are streamed into Blob Storage. Memory per chunk in transfer is at most
/// [`TransferSettings::max_blocks_in_memory`] blocks, `block_bytes x (parallel_blocks +
/// parallel_ranges x range_blocks + 1)` (blocks being staged, read ahead of the hash, and one
/// handed over), plus a few network reads per range, whatever the chunk's size (ACS chunks
/// reach 1.5 GB): 36 MiB with the defaults. The queue trigger runs up to `batchSize +
/// newBatchThreshold` transfers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSettings {
    /// `TRANSFER_BLOCK_BYTES`: bytes per Put Block. Default 4 MiB: well above the 256 KiB at
    /// which Blob Storage switches to high-throughput block ingest, and 375 blocks for a 1.5 GB
    /// chunk, far below the 50,000-block limit.
    pub block_bytes: usize,
    /// `TRANSFER_PARALLEL_BLOCKS`: Put Block requests in flight per chunk. Default 4.
    pub parallel_blocks: usize,
    /// `TRANSFER_PARALLEL_RANGES`: ranged GETs from ACS in flight per chunk; 1 reads the
    /// chunk as one stream (one per run of missing blocks when resuming). Default 4: one HTTPS stream runs at a
    /// per-connection rate with a round trip per request, so throughput comes from
    /// concurrency (Microsoft's .NET SDK reads recordings with 5 parallel ranges,
    /// `docs/protocols.md` §2.5), while the hash, computed in order, holds the blocks of every
    /// range in flight: 4 ranges of 4 MiB keep that at 16 MiB.
    pub parallel_ranges: usize,
    /// `TRANSFER_CONTENT_MD5`: send `Content-MD5` on each block so the service refuses a block
    /// corrupted between our buffer and its disk. Default off: TLS already protects the bytes
    /// on the wire, and MD5 costs about 1.4-1.7 CPU s/GiB here, the largest single cost.
    pub content_md5: bool,
    /// `TRANSFER_SHA256`: hash each chunk end to end and store the digest in the archive
    /// record and blob metadata, so anyone can verify the copy later. Default on: about
    /// 0.6 CPU s/GiB, on its own thread. (Not available when a transfer resumes mid-chunk.)
    pub sha256: bool,
    /// `DELETE_AFTER_ARCHIVE`: once every chunk of a recording is committed with its size
    /// verified, send the signed DELETE to each chunk's `deleteLocation` (GA events), so the
    /// recording does not wait out ACS's 24 h retention. Never on a partial archive. Default off.
    pub(crate) delete_after_archive: bool,
}

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            block_bytes: 4 * 1024 * 1024,
            parallel_blocks: 4,
            parallel_ranges: 4,
            content_md5: false,
            sha256: true,
            delete_after_archive: false,
        }
    }
}

/// Smallest block accepted (tests use small blocks; production wants MiBs).
pub(crate) const MIN_BLOCK_BYTES: usize = 64 * 1024;
/// Largest block accepted: memory per chunk grows with it.
pub(crate) const MAX_BLOCK_BYTES: usize = 100 * 1024 * 1024;

/// Bytes a ranged read asks for at least: each range is a whole number of blocks, and this
/// many bytes keep a request's round trip small against its transfer time.
pub const MIN_RANGE_BYTES: usize = 4 * 1024 * 1024;

impl TransferSettings {
    /// Blocks per ranged read: the fewest whole blocks that make [`MIN_RANGE_BYTES`].
    pub fn range_blocks(&self) -> usize {
        MIN_RANGE_BYTES.div_ceil(self.block_bytes).max(1)
    }

    /// Most blocks one request asks for: [`range_blocks`](Self::range_blocks) when ranges run
    /// in parallel; unbounded with one range, which reads each run of missing blocks as one
    /// stream (no round trip between ranges, and nothing to order for the hash).
    pub(crate) fn request_blocks(&self) -> u64 {
        if self.parallel_ranges == 1 {
            u64::MAX
        } else {
            self.range_blocks() as u64
        }
    }

    /// Most blocks one chunk's transfer holds at once: `parallel_blocks` being staged,
    /// `parallel_ranges x range_blocks` read ahead of the SHA-256 (which goes in block order),
    /// and one handed to the stager. Flat in the chunk's size.
    pub fn max_blocks_in_memory(&self) -> usize {
        self.parallel_blocks + self.parallel_ranges * self.range_blocks() + 1
    }

    fn load(lookup: &impl Lookup) -> Result<TransferSettings, ConfigError> {
        let d = TransferSettings::default();
        let flag = |name: &str, default: bool| parse_flag(lookup, name, default);
        Ok(TransferSettings {
            block_bytes: parse_opt(
                lookup,
                TRANSFER_BLOCK_BYTES,
                "a byte count from 65536 to 104857600",
                |v| {
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (MIN_BLOCK_BYTES..=MAX_BLOCK_BYTES).contains(n))
                },
            )?
            .unwrap_or(d.block_bytes),
            parallel_blocks: parse_opt(
                lookup,
                TRANSFER_PARALLEL_BLOCKS,
                "a number from 1 to 64",
                |v| v.parse::<usize>().ok().filter(|n| (1..=64).contains(n)),
            )?
            .unwrap_or(d.parallel_blocks),
            parallel_ranges: parse_opt(
                lookup,
                TRANSFER_PARALLEL_RANGES,
                "a number from 1 to 16",
                |v| v.parse::<usize>().ok().filter(|n| (1..=16).contains(n)),
            )?
            .unwrap_or(d.parallel_ranges),
            content_md5: flag(TRANSFER_CONTENT_MD5, d.content_md5)?,
            sha256: flag(TRANSFER_SHA256, d.sha256)?,
            delete_after_archive: flag(DELETE_AFTER_ARCHIVE, d.delete_after_archive)?,
        })
    }
}

/// A value that must never reach a log line or a `Debug` dump.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The value itself, for the one place that signs or sends it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A setting that is missing or cannot be used. The message always names the setting and never
/// repeats a secret value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required setting is absent or empty.
    #[error("setting {name} is required: {hint}")]
    Missing {
        /// The setting's name.
        name: String,
        /// What it should hold.
        hint: String,
    },
    /// A setting is present but unusable.
    #[error("setting {name} is malformed: {reason}")]
    Malformed {
        /// The setting's name.
        name: String,
        /// What is wrong with it (never the secret value itself).
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn missing(name: &str, hint: impl Into<String>) -> Self {
        ConfigError::Missing {
            name: name.to_string(),
            hint: hint.into(),
        }
    }
    pub(crate) fn malformed(name: &str, reason: impl Into<String>) -> Self {
        ConfigError::Malformed {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}

/// Reads one setting; `None` when unset. Blank values count as unset, as the Functions portal
/// stores cleared settings as empty strings.
pub trait Lookup {
    /// The setting's value, trimmed, or `None` when unset or blank.
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
}

/// The process environment.
pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Where the webhook hands recording chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveMode {
    /// The webhook enqueues one small job per chunk and answers at once; `RecordingTransfer`
    /// does the transfer. Needed for anything that can take longer than Event Grid's 30 s.
    Queue,
    /// The webhook transfers before answering. Only for small recordings: Event Grid waits 30 s
    /// and the Functions front end cuts HTTP requests at 230 s.
    Inline,
}

impl FromStr for ArchiveMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "queue" => Ok(ArchiveMode::Queue),
            "inline" => Ok(ArchiveMode::Inline),
            other => Err(format!("expected `queue` or `inline`, got `{other}`")),
        }
    }
}

/// How the text of a transfer queue message is written. It must match host.json
/// `extensions.queues.messageEncoding`, which the Functions host uses to read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEncoding {
    /// Base64 of the UTF-8 text: the Functions default.
    Base64,
    /// The text itself (XML-escaped on the wire). Needed when an Event Grid subscription writes
    /// events straight into the queue, since Event Grid does not base64 them.
    None,
}

impl FromStr for MessageEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "base64" => Ok(MessageEncoding::Base64),
            "none" => Ok(MessageEncoding::None),
            other => Err(format!(
                "expected `base64` or `none` (as host.json messageEncoding), got `{other}`"
            )),
        }
    }
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines: time, level, span fields, message, event fields.
    Text,
    /// One JSON object per line with every span and event field as a top-level key, for
    /// queries in Application Insights.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected `text` or `json`, got `{other}`")),
        }
    }
}

/// One `host[:port]` from `ACS_EXTRA_ALLOWED_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// Lower-case host name or IP literal.
    pub host: String,
    /// The port, when the entry named one; `None` allows any port.
    pub port: Option<u16>,
}

/// Everything the app reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`, when set.
    pub port: Option<u16>,
    /// `ACS_CONNECTION_STRING` (or endpoint + managed identity), when set.
    pub acs: Option<AcsSettings>,
    /// `RECORDINGS_STORAGE` and its `__` identity settings, when set.
    pub storage: Option<StorageSettings>,
    /// `RECORDINGS_CONTAINER`.
    pub container: String,
    /// `ARCHIVE_MODE`.
    pub archive_mode: ArchiveMode,
    /// `TRANSFER_QUEUE`.
    pub(crate) transfer_queue: String,
    /// `TRANSFER_MESSAGE_ENCODING`.
    pub message_encoding: MessageEncoding,
    /// `ACS_EXTRA_ALLOWED_HOSTS`: extra download hosts, for local emulators only.
    pub extra_allowed_hosts: Vec<AllowedHost>,
    /// `WEBHOOK_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `BLOB_NAME_TEMPLATE`.
    pub(crate) blob_name_template: BlobNameTemplate,
    /// `TRANSFER_*`.
    pub transfer: TransferSettings,
    /// Tier, encryption scope, WORM and `ARCHIVED_NOTIFY_QUEUE`.
    pub archive: ArchiveSettings,
    /// `HTTP_*`: what the handler's HTTP server grants one client.
    pub server: ServerLimits,
    /// `WEBHOOK_KEYS` and `WEBHOOK_ALLOW_ANONYMOUS`, for the Lambda front end.
    pub webhook_keys: WebhookKeys,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
}

impl Settings {
    /// Reads and validates every setting. Optional settings are checked when present; nothing
    /// is required here, so each capability asks for its own settings with `require_*`.
    pub fn load(lookup: &impl Lookup) -> Result<Settings, ConfigError> {
        Ok(Settings {
            port: parse_opt(lookup, PORT, "a TCP port number (1-65535)", |v| {
                v.parse::<u16>().ok().filter(|p| *p != 0)
            })?,
            acs: acs::load(lookup)?,
            storage: storage::load(lookup)?,
            container: parse_dns_name(
                lookup,
                RECORDINGS_CONTAINER,
                DEFAULT_CONTAINER,
                "container",
            )?,
            archive_mode: parse_choice(lookup, ARCHIVE_MODE, ArchiveMode::Queue)?,
            transfer_queue: parse_dns_name(
                lookup,
                TRANSFER_QUEUE,
                DEFAULT_TRANSFER_QUEUE,
                "queue",
            )?,
            message_encoding: parse_choice(
                lookup,
                TRANSFER_MESSAGE_ENCODING,
                MessageEncoding::Base64,
            )?,
            extra_allowed_hosts: parse_allowed_hosts(lookup)?,
            max_body_bytes: parse_opt(lookup, WEBHOOK_MAX_BODY_BYTES, "a byte count", |v| {
                v.parse::<usize>().ok().filter(|n| *n >= 1024)
            })?
            .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            blob_name_template: match lookup.get(naming::BLOB_NAME_TEMPLATE) {
                None => BlobNameTemplate::default(),
                Some(t) => BlobNameTemplate::parse(&t)?,
            },
            transfer: TransferSettings::load(lookup)?,
            archive: ArchiveSettings::load(lookup)?,
            server: front::load_server_limits(lookup)?,
            webhook_keys: front::load_webhook_keys(lookup)?,
            log_format: parse_choice(lookup, LOG_FORMAT, LogFormat::Text)?,
        })
    }

    /// The port to listen on, or an error that says how to provide one.
    pub fn require_port(&self) -> Result<u16, ConfigError> {
        self.port.ok_or_else(|| {
            ConfigError::missing(
                PORT,
                "the Functions host sets it; when running the handler by hand, set it or pass --port",
            )
        })
    }
}

/// Parses an optional setting with `parse`, naming `what` it should be when that fails.
pub(crate) fn parse_opt<T>(
    lookup: &impl Lookup,
    name: &str,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ConfigError> {
    match lookup.get(name) {
        None => Ok(None),
        Some(v) => parse(&v)
            .map(Some)
            .ok_or_else(|| ConfigError::malformed(name, format!("expected {what}, got `{v}`"))),
    }
}

/// An optional `true`/`false` setting (`1`/`0`, `yes`/`no`, `on`/`off` too), or `default`.
pub(crate) fn parse_flag(
    lookup: &impl Lookup,
    name: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    parse_opt(lookup, name, "true or false", |v| {
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        }
    })
    .map(|v| v.unwrap_or(default))
}

/// A container or queue name from `name` (or `default`): 3-63 characters, lower-case letters,
/// digits and single hyphens, starting and ending with a letter or digit (the Blob and Queue
/// services' naming rules).
fn parse_dns_name(
    lookup: &impl Lookup,
    name: &str,
    default: &str,
    kind: &str,
) -> Result<String, ConfigError> {
    let value = lookup.get(name).unwrap_or_else(|| default.to_string());
    if is_dns_style_name(&value) {
        Ok(value)
    } else {
        Err(ConfigError::malformed(
            name,
            format!("`{value}` is not a valid {kind} name (3-63 lower-case letters, digits and single hyphens)"),
        ))
    }
}

/// A setting read with `FromStr` (whose error says what is expected), or `default`.
fn parse_choice<T: FromStr<Err = String>>(
    lookup: &impl Lookup,
    name: &str,
    default: T,
) -> Result<T, ConfigError> {
    match lookup.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e: String| ConfigError::malformed(name, e)),
    }
}

fn is_dns_style_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn parse_allowed_hosts(lookup: &impl Lookup) -> Result<Vec<AllowedHost>, ConfigError> {
    const NAME: &str = "ACS_EXTRA_ALLOWED_HOSTS";
    let Some(raw) = lookup.get(NAME) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            parse_host_port(entry).ok_or_else(|| {
                ConfigError::malformed(NAME, format!("`{entry}` is not `host` or `host:port`"))
            })
        })
        .collect()
}

fn parse_host_port(entry: &str) -> Option<AllowedHost> {
    if entry.contains('/') || entry.contains('@') {
        return None;
    }
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p.parse::<u16>().ok().filter(|p| *p != 0)?)),
        Some(_) => return None,
        None => (entry, None),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    valid.then(|| AllowedHost {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn lookup(pairs: &[(&str, &str)]) -> impl Lookup {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = Settings::load(&lookup(&[])).unwrap();
        assert_eq!(s.container, "recordings");
        assert_eq!(s.transfer_queue, "recording-transfers");
        assert_eq!(s.archive_mode, ArchiveMode::Queue);
        assert_eq!(s.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(s.port, None);
        assert_eq!(s.log_format, LogFormat::Text);
        let json = Settings::load(&lookup(&[(LOG_FORMAT, "JSON")])).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        let err = s.require_port().unwrap_err();
        assert!(
            err.to_string().contains("FUNCTIONS_CUSTOMHANDLER_PORT"),
            "{err}"
        );
    }

    #[test]
    fn malformed_settings_are_named() {
        for (name, value) in [
            (PORT, "http"),
            (PORT, "0"),
            (ARCHIVE_MODE, "sometimes"),
            (RECORDINGS_CONTAINER, "Bad_Name"),
            (TRANSFER_QUEUE, "q"),
            (WEBHOOK_MAX_BODY_BYTES, "lots"),
            (TRANSFER_BLOCK_BYTES, "1024"),
            (TRANSFER_PARALLEL_BLOCKS, "0"),
            (TRANSFER_PARALLEL_RANGES, "0"),
            (TRANSFER_PARALLEL_RANGES, "17"),
            (TRANSFER_CONTENT_MD5, "maybe"),
            (TRANSFER_MESSAGE_ENCODING, "rot13"),
            (LOG_FORMAT, "xml"),
            ("ACS_EXTRA_ALLOWED_HOSTS", "http://127.0.0.1:80"),
        ] {
            let err = Settings::load(&lookup(&[(name, value)])).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn extra_hosts_accept_host_and_port_forms() {
        let s = Settings::load(&lookup(&[(
            "ACS_EXTRA_ALLOWED_HOSTS",
            "127.0.0.1:8443, Emulator.Local ,",
        )]))
        .unwrap();
        assert_eq!(
            s.extra_allowed_hosts,
            vec![
                AllowedHost {
                    host: "127.0.0.1".into(),
                    port: Some(8443)
                },
                AllowedHost {
                    host: "emulator.local".into(),
                    port: None
                },
            ]
        );
    }

    #[test]
    fn settings_debug_never_shows_a_secret() {
        let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
        let acs_key = "c2VjcmV0LWFjcy1rZXk=";
        for storage in [
            format!("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};EndpointSuffix=core.windows.net"),
            "https://acct.blob.core.windows.net/recordings?sv=2021-08-06&sr=c&sp=rcw&se=2030-01-01&sig=c2lnbmF0dXJlLXNlY3JldA%3D%3D".to_string(),
        ] {
            let s = Settings::load(&lookup(&[
                (RECORDINGS_STORAGE, &storage),
                ("ACS_CONNECTION_STRING", &format!("endpoint=https://contoso.communication.azure.com/;accesskey={acs_key}")),
            ]))
            .unwrap();
            let shown = format!("{s:?}");
            for secret in [key, acs_key, "c2lnbmF0dXJlLXNlY3JldA"] {
                assert!(!shown.contains(secret), "{shown}");
            }
            assert!(shown.contains("contoso.communication.azure.com"), "non-secret parts still show: {shown}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
    }
}
