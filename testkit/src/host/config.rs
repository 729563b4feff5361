//! What the host reads before it starts anything: host.json, every `<Function>/function.json`
//! under the app root, the app settings (local.settings.json "Values") and the `%NAME%`
//! binding expressions and connection names they resolve. Pure apart from reading files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::queue::{is_valid_queue_name, MessageEncoding};

/// host.json `functionTimeout` when absent, outside the Consumption plan (and under
/// `func start`).
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The shortest queue polling interval the host allows and starts its back-off from.
pub const MIN_POLLING_INTERVAL: Duration = Duration::from_millis(100);
/// The largest `batchSize` the Queue service serves in one Get Messages.
pub const MAX_BATCH_SIZE: u32 = 32;

/// host.json `extensions.queues`, with the host's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// Attempts before a failing message goes to `<queue>-poison` (default 5).
    pub max_dequeue_count: u32,
    /// How long a failed message stays invisible before it is retried (default 0).
    pub visibility_timeout: Duration,
    /// Messages fetched per Get Messages (default 16, at most 32).
    pub batch_size: u32,
    /// Fetch again when no more than this many are still running (default batchSize / 2).
    pub new_batch_threshold: u32,
    /// Upper bound of the polling back-off on an empty queue (default 1 min).
    pub max_polling_interval: Duration,
    /// How message text is encoded (default base64).
    pub message_encoding: MessageEncoding,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            max_dequeue_count: 5,
            visibility_timeout: Duration::ZERO,
            batch_size: 16,
            new_batch_threshold: 8,
            max_polling_interval: Duration::from_secs(60),
            message_encoding: MessageEncoding::Base64,
        }
    }
}

/// How the host passes an HTTP-only function's request to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMode {
    /// `enableProxyingHttpRequest` (`ProxyInvocationRequest`, YARP): the request streams
    /// through as it came, body included whatever its framing.
    Proxy,
    /// `enableForwardingHttpRequest`, "the legacy setting that rebuilds the HTTP request"
    /// (`ProcessHttpInAndOutInvocationRequest`): the body is copied only when the request
    /// has `Content-Length > 0` (`HttpRequestExtensions.ToHttpRequestMessage`).
    Forward,
}

/// The parts of host.json the emulator acts on.
#[derive(Debug, Clone)]
pub struct HostJson {
    /// `functionTimeout`; `None` when `-1` (unbounded).
    pub function_timeout: Option<Duration>,
    /// `extensions.http.routePrefix` (default `api`), without slashes.
    pub route_prefix: String,
    /// How HTTP-only functions reach the worker; `None`: neither flag is set.
    pub http_mode: Option<HttpMode>,
    /// `customHandler.description.defaultExecutablePath`.
    pub executable: Option<String>,
    /// `customHandler.description.workingDirectory`.
    pub working_directory: Option<String>,
    /// `customHandler.description.arguments`.
    pub arguments: Vec<String>,
    /// `extensions.queues`.
    pub queues: QueueOptions,
}

impl HostJson {
    /// Reads `<app_root>/host.json`.
    pub fn load(app_root: &Path) -> Result<HostJson, String> {
        let path = app_root.join("host.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (the host needs host.json in the app root)",
                path.display()
            )
        })?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses host.json text. Keys are matched without regard to case, as the host's
    /// configuration does.
    pub fn parse(text: &str) -> Result<HostJson, String> {
        let root: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let root = root.as_object().ok_or("not a JSON object")?;
        match get(root, "version").and_then(Value::as_str) {
            Some("2.0") => {}
            other => return Err(format!("\"version\" must be \"2.0\", found {other:?}")),
        }
        let function_timeout = match get(root, "functionTimeout").and_then(Value::as_str) {
            None => Some(DEFAULT_FUNCTION_TIMEOUT),
            Some("-1") => None,
            Some(t) => Some(parse_timespan(t).map_err(|e| format!("functionTimeout: {e}"))?),
        };
        let extensions = object(root, "extensions");
        let route_prefix = extensions
            .and_then(|e| object(e, "http"))
            .and_then(|h| get(h, "routePrefix"))
            .and_then(Value::as_str)
            .unwrap_or("api")
            .trim_matches('/')
            .to_string();
        let handler = object(root, "customHandler");
        let flag = |name| {
            handler
                .and_then(|h| get(h, name))
                .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"))
        };
        // `DefaultHttpWorkerService.InvokeAsync` checks proxying first.
        let http_mode = if flag("enableProxyingHttpRequest") {
            Some(HttpMode::Proxy)
        } else if flag("enableForwardingHttpRequest") {
            Some(HttpMode::Forward)
        } else {
            None
        };
        let description = handler.and_then(|h| object(h, "description"));
        let text_of = |name| {
            description
                .and_then(|d| get(d, name))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let arguments = description
            .and_then(|d| get(d, "arguments"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let queues = match extensions.and_then(|e| object(e, "queues")) {
            Some(q) => parse_queue_options(q)?,
            None => QueueOptions::default(),
        };
        Ok(HostJson {
            function_timeout,
            route_prefix,
            http_mode,
            executable: text_of("defaultExecutablePath"),
            working_directory: text_of("workingDirectory"),
            arguments,
            queues,
        })
    }
}

fn parse_queue_options(q: &Map<String, Value>) -> Result<QueueOptions, String> {
    let defaults = QueueOptions::default();
    let number = |name: &str| -> Result<Option<u32>, String> {
        match get(q, name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    format!("extensions.queues.{name}: expected a whole number, found {v}")
                }),
        }
    };
    let span = |name: &str| -> Result<Option<Duration>, String> {
        match get(q, name).and_then(Value::as_str) {
            None => Ok(None),
            Some(t) => parse_timespan(t)
                .map(Some)
                .map_err(|e| format!("extensions.queues.{name}: {e}")),
        }
    };
    let batch_size = number("batchSize")?.unwrap_or(defaults.batch_size);
    if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
        return Err(format!(
            "extensions.queues.batchSize must be 1-{MAX_BATCH_SIZE}, found {batch_size}"
        ));
    }
    let max_dequeue_count = number("maxDequeueCount")?.unwrap_or(defaults.max_dequeue_count);
    if max_dequeue_count == 0 {
        return Err("extensions.queues.maxDequeueCount must be at least 1".into());
    }
    let max_polling_interval = span("maxPollingInterval")?.unwrap_or(defaults.max_polling_interval);
    if max_polling_interval < MIN_POLLING_INTERVAL {
        return Err(format!(
            "extensions.queues.maxPollingInterval must be at least {MIN_POLLING_INTERVAL:?}"
        ));
    }
    let message_encoding = match get(q, "messageEncoding").and_then(Value::as_str) {
        None => MessageEncoding::Base64,
        Some(e) => e
            .parse()
            .map_err(|e| format!("extensions.queues.messageEncoding: {e}"))?,
    };
    Ok(QueueOptions {
        max_dequeue_count,
        visibility_timeout: span("visibilityTimeout")?.unwrap_or(defaults.visibility_timeout),
        batch_size,
        new_batch_threshold: number("newBatchThreshold")?.unwrap_or(batch_size / 2),
        max_polling_interval,
        message_encoding,
    })
}

/// A .NET `TimeSpan` as host.json writes it: `[d.]hh:mm:ss[.fffffff]`.
pub fn parse_timespan(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a time span like 00:05:00");
    let (days, clock) = match text.trim().split_once('.') {
        Some((d, rest)) if rest.contains(':') => (d.parse::<u64>().map_err(|_| bad())?, rest),
        _ => (0, text.trim()),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let [h, m, s] = parts.as_slice() else {
        return Err(bad());
    };
    let hours: u64 = h.parse().map_err(|_| bad())?;
    let minutes: u64 = m.parse().map_err(|_| bad())?;
    let seconds: f64 = s.parse().map_err(|_| bad())?;
    if minutes >= 60 || !(0.0..60.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(
        Duration::from_secs((days * 24 + hours) * 3600 + minutes * 60)
            + Duration::from_secs_f64(seconds),
    )
}

/// A duration as a .NET `TimeSpan`, e.g. `00:10:00`, `00:00:01.5000000`.
pub(crate) fn format_timespan(d: Duration) -> String {
    let secs = d.as_secs();
    let base = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    match d.subsec_nanos() {
        0 => base,
        n => format!("{base}.{:07}", n / 100),
    }
}

/// What starts a function, as far as the emulator reproduces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Exactly one `httpTrigger` and one `http` output: forwarded raw to the worker.
    Http {
        /// Path after the route prefix: `route`, or the function name.
        route: String,
        /// Allowed methods (upper case); `None`: any.
        methods: Option<Vec<String>>,
    },
    /// A `queueTrigger` (and no other binding).
    Queue {
        /// The binding's `name`: the key under `Data` in the envelope.
        binding: String,
        /// `queueName` as written, possibly a `%NAME%` expression.
        queue_name: String,
        /// `connection`: the app setting holding the connection string.
        connection: String,
    },
}

/// One function: its folder name and trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDef {
    /// The folder name, which is the function name.
    pub name: String,
    /// How it is triggered.
    pub trigger: Trigger,
}

/// Every `<dir>/function.json` directly under `app_root`, sorted by name, as the host indexes
/// them. A function with bindings the emulator does not reproduce is an error rather than a
/// silent difference from the host.
pub fn load_functions(app_root: &Path, host: &HostJson) -> Result<Vec<FunctionDef>, String> {
    let entries = std::fs::read_dir(app_root)
        .map_err(|e| format!("cannot list the app root {}: {e}", app_root.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("function.json").is_file())
        .collect();
    dirs.sort();
    dirs.iter()
        .map(|dir| {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let path = dir.join("function.json");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
            let trigger = classify(&name, &json, host.http_mode.is_some())
                .map_err(|e| format!("function {name} ({}): {e}", path.display()))?;
            Ok(FunctionDef { name, trigger })
        })
        .collect()
}

/// The trigger of one function.json document.
pub fn classify(name: &str, function_json: &Value, forward_http: bool) -> Result<Trigger, String> {
    let bindings: Vec<&Map<String, Value>> = function_json
        .as_object()
        .and_then(|o| get(o, "bindings"))
        .and_then(Value::as_array)
        .ok_or("no \"bindings\" array")?
        .iter()
        .filter_map(Value::as_object)
        .collect();
    let text = |b: &Map<String, Value>, key: &str| {
        get(b, key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let types: Vec<String> = bindings
        .iter()
        .map(|b| text(b, "type").to_ascii_lowercase())
        .collect();
    match types.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["httptrigger", "http"] | ["http", "httptrigger"] => {
            if !forward_http {
                return Err("HTTP functions are only reproduced with customHandler.enableProxyingHttpRequest or enableForwardingHttpRequest (the emulator does not build the HTTP invocation envelope)".into());
            }
            let trigger = bindings[types.iter().position(|t| t == "httptrigger").unwrap_or(0)];
            let route = match text(trigger, "route") {
                r if r.is_empty() => name.to_string(),
                r if r.contains('{') => {
                    return Err(format!("route templates (`{r}`) are not reproduced by the emulator"))
                }
                r => r.trim_matches('/').to_string(),
            };
            let methods = get(trigger, "methods").and_then(Value::as_array).map(|m| {
                m.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_uppercase)
                    .collect()
            });
            Ok(Trigger::Http { route, methods })
        }
        ["queuetrigger"] => {
            let b = bindings[0];
            let binding = text(b, "name");
            if binding.is_empty() {
                return Err("the queueTrigger binding has no name".into());
            }
            let queue_name = text(b, "queueName");
            if queue_name.is_empty() {
                return Err("the queueTrigger binding has no queueName".into());
            }
            Ok(Trigger::Queue {
                binding,
                queue_name,
                connection: text(b, "connection"),
            })
        }
        _ => Err(format!(
            "bindings {:?} are not reproduced by the emulator (only httpTrigger + http, or a lone queueTrigger)",
            bindings.iter().map(|b| text(b, "type")).collect::<Vec<_>>()
        )),
    }
}

/// The app settings: local.settings.json "Values" or the Function App's application settings,
/// falling back to the emulator's own environment as the host's configuration does. Empty
/// values count as unset (`func start` cannot set an empty environment variable).
#[derive(Debug, Clone, Default)]
pub struct AppSettings {
    values: Vec<(String, String)>,
}

impl AppSettings {
    /// Settings from `(name, value)` pairs.
    pub fn new(values: &[(String, String)]) -> Self {
        AppSettings {
            values: values.to_vec(),
        }
    }

    /// Every pair as given (empty values included), for the worker's environment.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.values
    }

    /// The value of `name` (matched without regard to case, like the host's configuration),
    /// then the environment; `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
    }

    /// Resolves every `%NAME%` in a binding expression; an unset name is an error, as when the
    /// host indexes the function.
    pub fn resolve(&self, expression: &str) -> Result<String, String> {
        expand(expression, |name| self.get(name)).map_err(|name| {
            format!("'%{name}%' does not resolve to a value (no app setting {name})")
        })
    }

    /// Expands `%NAME%` in customHandler arguments, leaving unknown names as they are (like
    /// .NET's `Environment.ExpandEnvironmentVariables`).
    pub fn expand_lenient(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            let after = &rest[start + 1..];
            match after.find('%') {
                Some(end) => match self.get(&after[..end]) {
                    Some(v) => {
                        out.push_str(&rest[..start]);
                        out.push_str(&v);
                        rest = &after[end + 1..];
                    }
                    None => {
                        out.push_str(&rest[..start + 1]);
                        rest = after;
                    }
                },
                None => break,
            }
        }
        out.push_str(rest);
        out
    }

    /// The connection string a binding's `connection` names: the setting itself, else
    /// `AzureWebJobs<name>`; an empty name means `AzureWebJobsStorage`. Identity-based
    /// connections (`<name>__queueServiceUri`) are not reproduced.
    pub fn connection_string(&self, connection: &str) -> Result<String, String> {
        let name = if connection.is_empty() {
            "AzureWebJobsStorage"
        } else {
            connection
        };
        if let Some(v) = self
            .get(name)
            .or_else(|| self.get(&format!("AzureWebJobs{name}")))
        {
            return Ok(v);
        }
        if ["__queueServiceUri", "__serviceUri", "__accountName"]
            .iter()
            .any(|suffix| self.get(&format!("{name}{suffix}")).is_some())
        {
            return Err(format!(
                "connection {name} is identity-based ({name}__*); the emulator needs a connection string with an account key"
            ));
        }
        Err(format!(
            "Storage account connection string '{name}' does not exist. Make sure that it is a defined App Setting."
        ))
    }

    /// The queue a trigger listens to: `queueName` resolved, lower-cased (the host coerces it)
    /// and validated.
    pub fn queue_name(&self, expression: &str) -> Result<String, String> {
        let name = self.resolve(expression)?.to_ascii_lowercase();
        if is_valid_queue_name(&name) {
            Ok(name)
        } else {
            Err(format!("'{name}' is not a valid queue name (3-63 lower-case letters, digits and single hyphens)"))
        }
    }
}

fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let end = after.find('%').ok_or_else(|| after.to_string())?;
        let name = &after[..end];
        out.push_str(&rest[..start]);
        out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The "Values" of a local.settings.json file. Non-string values are kept as their JSON text;
/// an encrypted file is refused.
pub fn load_local_settings(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let root = json
        .as_object()
        .ok_or_else(|| format!("{}: not a JSON object", path.display()))?;
    if get(root, "IsEncrypted").and_then(Value::as_bool) == Some(true) {
        return Err(format!(
            "{}: encrypted settings are not supported",
            path.display()
        ));
    }
    Ok(object(root, "Values")
        .map(|values| {
            values
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default())
}

fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn object<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    get(obj, key).and_then(Value::as_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const REPO_HOST_JSON: &str = include_str!("../../../host.json");

    #[test]
    fn repo_host_json_is_read_with_its_queue_settings() {
        let h = HostJson::parse(REPO_HOST_JSON).unwrap();
        assert_eq!(h.function_timeout, Some(Duration::from_secs(600)));
        assert_eq!(h.route_prefix, "api");
        assert_eq!(h.http_mode, Some(HttpMode::Proxy));
        assert_eq!(h.executable.as_deref(), Some("handler"));
        assert_eq!(h.working_directory, None);
        assert!(h.queues.max_dequeue_count >= 1);
        assert!(h.queues.batch_size >= 1);
    }

    #[test]
    fn queue_options_default_like_the_host() {
        let h = HostJson::parse(r#"{"version":"2.0"}"#).unwrap();
        assert_eq!(h.queues, QueueOptions::default());
        assert_eq!(h.function_timeout, Some(DEFAULT_FUNCTION_TIMEOUT));
        let h = HostJson::parse(
            r#"{"version":"2.0","functionTimeout":"-1","extensions":{"Queues":{"BatchSize":6,"messageEncoding":"none"}}}"#,
        )
        .unwrap();
        assert_eq!(h.function_timeout, None);
        assert_eq!(h.queues.batch_size, 6);
        assert_eq!(h.queues.new_batch_threshold, 3);
        assert_eq!(h.queues.message_encoding, MessageEncoding::None);
    }

    #[test]
    fn invalid_host_json_is_refused_with_the_setting_named() {
        for (text, needle) in [
            (r#"{}"#, "version"),
            (
                r#"{"version":"2.0","extensions":{"queues":{"batchSize":33}}}"#,
                "batchSize",
            ),
            (
                r#"{"version":"2.0","extensions":{"queues":{"maxPollingInterval":"00:00:00.05"}}}"#,
                "maxPollingInterval",
            ),
            (
                r#"{"version":"2.0","extensions":{"queues":{"messageEncoding":"utf8"}}}"#,
                "messageEncoding",
            ),
            (
                r#"{"version":"2.0","functionTimeout":"10 minutes"}"#,
                "functionTimeout",
            ),
        ] {
            let e = HostJson::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn timespans_parse_like_dotnet() {
        assert_eq!(parse_timespan("00:10:00"), Ok(Duration::from_secs(600)));
        assert_eq!(
            parse_timespan("00:00:00.250"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_timespan("1.02:00:00"),
            Ok(Duration::from_secs(26 * 3600))
        );
        assert!(parse_timespan("10:00").is_err());
        assert!(parse_timespan("00:61:00").is_err());
    }

    #[test]
    fn timeouts_are_written_like_dotnet_timespans() {
        assert_eq!(format_timespan(Duration::from_secs(600)), "00:10:00");
        assert_eq!(
            format_timespan(Duration::from_millis(1500)),
            "00:00:01.5000000"
        );
        assert_eq!(
            format_timespan(Duration::from_secs(26 * 3600 + 61)),
            "26:01:01"
        );
    }

    #[test]
    fn repo_functions_are_classified() {
        let webhook: Value =
            serde_json::from_str(include_str!("../../../RecordingWebhook/function.json")).unwrap();
        assert_eq!(
            classify("RecordingWebhook", &webhook, true),
            Ok(Trigger::Http {
                route: "RecordingWebhook".into(),
                methods: Some(vec!["POST".into(), "OPTIONS".into()])
            })
        );
        assert!(classify("RecordingWebhook", &webhook, false).is_err());
        let transfer: Value =
            serde_json::from_str(include_str!("../../../RecordingTransfer/function.json")).unwrap();
        assert_eq!(
            classify("RecordingTransfer", &transfer, true),
            Ok(Trigger::Queue {
                binding: "job".into(),
                queue_name: "%TRANSFER_QUEUE%".into(),
                connection: "RECORDINGS_STORAGE".into()
            })
        );
    }

    #[test]
    fn unsupported_bindings_are_errors() {
        let timer = json!({"bindings": [{"type": "timerTrigger", "name": "t", "direction": "in"}]});
        assert!(classify("T", &timer, true)
            .unwrap_err()
            .contains("timerTrigger"));
        let queue_out = json!({"bindings": [
            {"type": "queueTrigger", "name": "job", "queueName": "q"},
            {"type": "queue", "name": "$return", "direction": "out", "queueName": "done"}]});
        assert!(classify("Q", &queue_out, true).is_err());
    }

    #[test]
    fn binding_expressions_resolve_from_app_settings() {
        let s = AppSettings::new(&[
            ("TRANSFER_QUEUE".into(), "Recording-Transfers".into()),
            ("EMPTY".into(), String::new()),
            (
                "RECORDINGS_STORAGE".into(),
                "UseDevelopmentStorage=true".into(),
            ),
            (
                "AzureWebJobsOther".into(),
                "UseDevelopmentStorage=true".into(),
            ),
            (
                "IDENT__queueServiceUri".into(),
                "https://a.queue.core.windows.net".into(),
            ),
        ]);
        assert_eq!(
            s.queue_name("%TRANSFER_QUEUE%"),
            Ok("recording-transfers".into())
        );
        assert_eq!(
            s.resolve("x-%TRANSFER_QUEUE%-y"),
            Ok("x-Recording-Transfers-y".into())
        );
        let e = s.resolve("%EMPTY%").unwrap_err();
        assert!(e.contains("'%EMPTY%' does not resolve"), "{e}");
        assert!(s.queue_name("%UNSET_SETTING_FOR_TEST_7F3%").is_err());
        assert!(s.queue_name("bad_name").is_err());
        assert_eq!(
            s.connection_string("RECORDINGS_STORAGE").as_deref(),
            Ok("UseDevelopmentStorage=true")
        );
        assert!(s.connection_string("Other").is_ok());
        assert!(s
            .connection_string("IDENT")
            .unwrap_err()
            .contains("identity-based"));
        assert!(s
            .connection_string("MISSING_7F3")
            .unwrap_err()
            .contains("does not exist"));
        assert_eq!(
            s.expand_lenient("--q=%TRANSFER_QUEUE% %NOPE_7F3%"),
            "--q=Recording-Transfers %NOPE_7F3%"
        );
    }

    #[test]
    fn local_settings_values_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.settings.json");
        std::fs::write(
            &path,
            r#"{"IsEncrypted": false, "Values": {"A": "1", "B": 2, "C": ""}, "Host": {"LocalHttpPort": 7071}}"#,
        )
        .unwrap();
        let v = load_local_settings(&path).unwrap();
        assert_eq!(
            v,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "2".into()),
                ("C".into(), String::new())
            ]
        );
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../local.settings.json.example");
        assert!(load_local_settings(&example).is_ok());
    }
}
