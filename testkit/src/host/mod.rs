//! An Azure Functions host emulator for custom handlers, for tests and the local demo: it
//! reads the app the way the host does and drives the `handler` the way the host does, so a
//! behaviour seen here is the one `func start` users (and Azure) meet.
//!
//! Two levels:
//! * [`HandlerProcess`]: one worker process started like the host starts it, for tests that
//!   talk to the handler directly (tests/webhook.rs).
//! * [`FunctionsHost`]: the whole host: the app, the worker supervisor, the HTTP front end and
//!   one queue listener per queue-triggered function.
//!
//! # Host behaviours reproduced
//!
//! Sources: `docs/protocols.md` §4, the Functions host (repository
//! Azure/azure-functions-host: `DefaultHttpWorkerService`, `HttpWorkerOptions`,
//! `HttpWorkerDescription`, `WorkerProcess`, `HttpRequestExtensions`,
//! `HttpFunctionInvocationDispatcher`, `ScriptInvocationContextExtensions`), the custom
//! handlers doc (learn.microsoft.com/azure/azure-functions/functions-custom-handlers) and the
//! WebJobs Storage Queues extension 5.x (`QueueListener`, `QueueProcessor`).
//!
//! **App loading**
//! * host.json (`version` must be "2.0"; keys matched without regard to case): `functionTimeout`
//!   (default 30 min, `-1` unbounded), `extensions.http.routePrefix` (default `api`),
//!   `customHandler.description` (`defaultExecutablePath` under the app root, `workingDirectory`
//!   relative to it, `arguments` with `%NAME%` expanded from app settings, unknown names kept),
//!   `customHandler.enableProxyingHttpRequest` / `enableForwardingHttpRequest` ([`HttpMode`]),
//!   `extensions.queues` (`maxDequeueCount` 5, `visibilityTimeout` 0, `batchSize` 16 (max 32),
//!   `newBatchThreshold` batchSize/2, `maxPollingInterval` 1 min (min 100 ms),
//!   `messageEncoding` base64|none), with the host's validation errors.
//! * Every `<Function>/function.json` directly under the app root; the function name is the
//!   folder name. `AzureWebJobs.<Function>.Disabled = true` disables a function.
//! * App settings (local.settings.json "Values", see [`load_local_settings`]) become the
//!   worker's environment on top of the emulator's own; empty values are removed rather than
//!   set, as `func start` does. Binding expressions resolve from the settings, then the
//!   environment, matched without regard to case.
//!
//! **Worker process** ([`HandlerProcess`], supervisor)
//! * Environment `FUNCTIONS_CUSTOMHANDLER_PORT`, `FUNCTIONS_HTTPWORKER_PORT` (a free port),
//!   `FUNCTIONS_CUSTOMHANDLER_WORKER_ID`, `FUNCTIONS_HTTPWORKER_ID` (a new GUID per process),
//!   `FUNCTIONS_APP_ROOT_PATH` (`HttpWorkerProcess.CreateWorkerProcess`). A worker that exits
//!   saying its port is in use (another process took it first) is started again on a fresh
//!   port: a harness guard against the race, not something the host is documented to do.
//! * Readiness: `GET /` every 25 ms until any HTTP answer, within **30 s**
//!   (`DefaultHttpWorkerService.IsWorkerReady`, `HttpWorkerOptions.InitializationTimeout`
//!   defaults to 30 s in code; the doc's "60 seconds" is not what the code does).
//! * Output: every stdout line is recorded at **Information**; every stderr line at **Error**,
//!   or **Warning** when it contains "warn" in any case (`WorkerProcess.OnOutputDataReceived`,
//!   `ParseErrorMessageAndLog`; `HttpWorkerDescription.UseStdErrorStreamForErrorsOnly` is true
//!   for custom handlers). See [`FunctionsHost::worker_lines`] and [`LogLevel`].
//! * A worker that exits unexpectedly is restarted (new port, new id, readiness probe);
//!   invocations in flight on it fail, new ones wait for the new process. After 3 failed
//!   start-ups in a row the emulator gives up (the host would shut down).
//! * `functionTimeout` exceeded: the invocation fails and the worker is killed and restarted
//!   ("A function timeout has occurred. Restarting worker process ...").
//! * Stop: **SIGKILL**, no SIGTERM and no drain (`WorkerProcess.Dispose` calls
//!   `Process.Kill()`, then waits 1 s for the exit). A handler's own SIGTERM handling never
//!   runs under the host; correctness after a stop rests on resuming.
//!
//! **HTTP** (front end on a free port, or a chosen one, like `func start` on 7071)
//! * Only HTTP-only functions (bindings exactly `httpTrigger` + `http` out,
//!   `FunctionMetadataExtensions.IsHttpInAndOutFunction`) with one of the two flags; other
//!   functions keep the invocation envelope even then (`DefaultHttpWorkerService.InvokeAsync`).
//!   The request goes to the worker at the same path (`/<routePrefix>/<route or function
//!   name>`, matched without regard to case) with the original query string (so the function
//!   key in `?code=` reaches the worker) and headers, plus `X-Azure-Functions-InvocationId`
//!   and `X-Azure-Functions-HostVersion`. The worker's status, headers and body come back
//!   unchanged, redirects not followed. A method not in `methods` is a 404, as the host's
//!   route constraint gives. No answer from the worker: 500. Bodies over 100 MB: 413.
//! * `enableProxyingHttpRequest` ([`HttpMode::Proxy`], `ProxyInvocationRequest`, YARP; takes
//!   precedence when both flags are set): headers and body pass as they came, whatever the
//!   body's framing; `User-Agent` untouched.
//! * `enableForwardingHttpRequest` ([`HttpMode::Forward`], `ProcessHttpInAndOutInvocationRequest`,
//!   "the legacy setting that rebuilds the HTTP request"): `HttpRequestExtensions.ToHttpRequestMessage`
//!   copies the body **only when `Content-Length > 0`**, so a chunked request reaches the
//!   worker with no body and no `Content-Type`; other content headers (`Content-Encoding`, ...)
//!   are always lost; `Azure-Functions-Host/<v>` is appended to `User-Agent`.
//!
//! **Queue triggers** (one listener per function; see `listener.rs`)
//! * `queueName` `%NAME%` resolved from app settings (unresolved: start-up error), lower-cased
//!   and validated; `connection` names a connection string setting (`X`, else `AzureWebJobsX`;
//!   empty: `AzureWebJobsStorage`), explicit or `UseDevelopmentStorage=true` (Azurite's default
//!   ports).
//! * Get Messages with `batchSize` and a 10 min peek-lock, renewed at half-time while an
//!   invocation runs; fetch again when no more than `newBatchThreshold` are running (so at most
//!   batchSize + newBatchThreshold in flight); empty, missing or failing queue: back-off from
//!   100 ms doubling to `maxPollingInterval`, reset when messages are found.
//! * Invocation: `POST http://127.0.0.1:<port>/<Function>` with
//!   `{"Data": {<binding>: <text JSON-encoded twice>}, "Metadata": {DequeueCount, Id,
//!   PopReceipt, InsertionTime, ExpirationTime, NextVisibleTime, sys{MethodName, UtcNow,
//!   RandGuid}}}` serialised exactly as the host does (see `invoke.rs`) and the host's headers.
//!   The answer, as `DefaultHttpWorkerService.ProcessDefaultInvocationRequest` reads it: a
//!   **non-2xx status fails at once and its body is never read**, so its `Logs` are dropped
//!   (`EnsureSuccessStatusCode()` comes first); a 2xx JSON object succeeds and its `Logs` go
//!   to the host log; a 2xx with an **empty (or `null`) body never completes** (the result
//!   reads as null and is never set) and hangs until `functionTimeout` fails it and recycles
//!   the worker; any other body, no answer or a dead worker fails.
//! * Success: Delete Message. Failure with dequeueCount >= maxDequeueCount: Put Message into
//!   `<queue>-poison` (created if missing; same wire text), then Delete. Other failures: Update
//!   Message with `visibilityTimeout`. Already dequeued more than maxDequeueCount times, or not
//!   decodable with `messageEncoding`: straight to the poison queue, no invocation.
//! * Every queue operation (get, delete, release, renew, poison) is retried as the host's Azure
//!   SDK pipeline retries it: no answer or 408/429/500/502/503/504, 3 retries, back-off from
//!   0.8 s doubling (Azure.Core's defaults, azure-sdk-for-net
//!   `sdk/core/Azure.Core/samples/Configuration.md`; see `queue::QueueClient`). A Delete
//!   sent once and lost would leave the message locked for the 10 min peek-lock.
//! * Log lines in the host's words ("Executing 'Functions.X' (Reason=..., Id=...)",
//!   "Executed ... (Failed, ...)", "Message has reached MaxDequeueCount of 5. Moving message to
//!   queue '...-poison'.") plus the reason, in [`FunctionsHost::log`] and on stderr with
//!   `TESTKIT_ECHO=1`.
//!
//! # Not reproduced
//! * `enableProxyingHttpRequest`'s streaming (YARP buffers nothing): bodies are buffered here,
//!   with the same result for the worker; YARP's `X-Forwarded-*` headers and its 240 s
//!   activity timeout; the stdout prefixes the host routes to its own logs
//!   (`LanguageWorkerConsoleLog`, `azfuncjsonlog:`).
//! * Function keys and `authLevel` (every request is let through; `code` is passed on),
//!   CORS, the admin API (`/admin/...`), the host's own `/api` index pages.
//! * The HTTP invocation envelope (HTTP functions without forwarding), route templates
//!   (`{id}`), output bindings and every trigger but `httpTrigger` and `queueTrigger`: start-up
//!   refuses such functions instead of running them differently from the host.
//! * Identity-based connections (`X__queueServiceUri`), SAS connection strings.
//! * Scale-out (one instance, one worker process: `FUNCTIONS_WORKER_PROCESS_COUNT` ignored),
//!   dynamic concurrency, drain mode, retry policies (`RetryContext`), the randomisation of
//!   the polling back-off, queue message binding data beyond the metadata above.
//! * Application Insights, host.json `logging`, extension bundles, the 230 s front-end limit of
//!   Azure (which `func start` does not have either), the Consumption plan's 5 min default
//!   timeout (30 min is used, as `func start` and dedicated plans do).
//!
//! # Deliberate differences (for tests)
//! * The trigger queue and its poison queue are created at start-up ([`HostOptions::create_queues`],
//!   default on); the host does neither (it polls a missing queue until it exists, and creates
//!   the poison queue on the first poison message).
//! * [`HostOptions`] can shorten `maxPollingInterval`, `visibilityTimeout`, `functionTimeout`
//!   and the peek-lock, so tests run in seconds with the repo's host.json.

mod config;
mod front;
mod ids;
mod invoke;
mod journal;
mod listener;
mod process;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{
    load_local_settings, parse_timespan, AppSettings, FunctionDef, HostJson, HttpMode,
    QueueOptions, Trigger,
};
pub use invoke::{queue_envelope, SysMetadata};
pub use journal::{InvocationRecord, InvocationStatus, PoisonRecord, WorkerLine};
pub use process::{
    free_port, HandlerProcess, LineObserver, LogLevel, OutputStream, WorkerCommand, HOST_VERSION,
    STARTUP_LIMIT,
};
pub use worker::WorkerInfo;

pub(crate) use process::{capture_output, wait_exit};

use crate::queue::QueueClient;
use front::{FrontEnd, HttpRoute};
use journal::Journal;
use listener::QueueListener;
use worker::Worker;

/// The host's peek-lock on a message being processed.
pub const PEEK_LOCK: Duration = Duration::from_secs(10 * 60);

/// How a [`FunctionsHost`] starts. `Default` is the host's behaviour with the worker from
/// host.json; tests usually set `handler`, `app_settings` and shorter intervals.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The worker executable; `None`: host.json `defaultExecutablePath` under the app root.
    /// host.json `arguments` are passed to it either way.
    pub handler: Option<PathBuf>,
    /// The app settings (local.settings.json "Values").
    pub app_settings: Vec<(String, String)>,
    /// The front end's port; `None`: a free one.
    pub port: Option<u16>,
    /// Replaces host.json `maxPollingInterval` (at least 100 ms).
    pub max_polling_interval: Option<Duration>,
    /// Replaces host.json `visibilityTimeout` (the delay before a failed message is retried).
    pub visibility_timeout: Option<Duration>,
    /// Replaces host.json `functionTimeout`.
    pub function_timeout: Option<Duration>,
    /// The peek-lock on messages being processed (host: 10 min; at least 2 s).
    pub peek_lock: Duration,
    /// Create each trigger queue and its `-poison` queue at start-up (the host does not).
    pub create_queues: bool,
    /// Print the host log to stderr (default: when `TESTKIT_ECHO` is set).
    pub echo: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            handler: None,
            app_settings: Vec::new(),
            port: None,
            max_polling_interval: None,
            visibility_timeout: None,
            function_timeout: None,
            peek_lock: PEEK_LOCK,
            create_queues: true,
            echo: std::env::var_os("TESTKIT_ECHO").is_some(),
        }
    }
}

/// A queue listener's identity, for [`FunctionsHost::wait_until_idle`].
#[derive(Debug, Clone)]
pub struct QueueBinding {
    /// The function.
    pub function: String,
    /// The trigger queue (resolved).
    pub queue: String,
    /// `<queue>-poison`.
    pub poison_queue: String,
    /// A client for the queue's account.
    pub client: QueueClient,
}

/// A running emulated Functions host. Dropping it kills the worker; [`FunctionsHost::stop`]
/// stops everything gracefully.
pub struct FunctionsHost {
    base_url: String,
    journal: Arc<Journal>,
    worker: Arc<Worker>,
    queues: Vec<QueueBinding>,
    in_flight: Arc<AtomicUsize>,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    front_end: Option<JoinHandle<()>>,
    supervisor: Option<JoinHandle<()>>,
}

impl FunctionsHost {
    /// Reads host.json and every `<Function>/function.json` under `app_root` (like the host
    /// does), starts `handler_binary` with the host's variables plus `app_settings`, waits for
    /// readiness, serves the HTTP front end on a free port and runs one listener per
    /// queue-triggered function, all with host.json's settings.
    pub async fn start(
        app_root: &Path,
        handler_binary: &Path,
        app_settings: &[(String, String)],
    ) -> Result<FunctionsHost, String> {
        let options = HostOptions {
            handler: Some(handler_binary.to_path_buf()),
            app_settings: app_settings.to_vec(),
            ..HostOptions::default()
        };
        Self::start_with(app_root, options).await
    }

    /// [`FunctionsHost::start`] with every option.
    pub async fn start_with(
        app_root: &Path,
        options: HostOptions,
    ) -> Result<FunctionsHost, String> {
        let app_root = app_root
            .canonicalize()
            .map_err(|e| format!("app root {}: {e}", app_root.display()))?;
        let host = HostJson::load(&app_root)?;
        let settings = AppSettings::new(&options.app_settings);
        if options.peek_lock < Duration::from_secs(2) {
            return Err("HostOptions::peek_lock must be at least 2 s".into());
        }
        let mut queue_options = host.queues.clone();
        if let Some(interval) = options.max_polling_interval {
            if interval < config::MIN_POLLING_INTERVAL {
                return Err("HostOptions::max_polling_interval must be at least 100 ms".into());
            }
            queue_options.max_polling_interval = interval;
        }
        if let Some(v) = options.visibility_timeout {
            queue_options.visibility_timeout = v;
        }
        let function_timeout = options.function_timeout.or(host.function_timeout);

        let functions: Vec<FunctionDef> = config::load_functions(&app_root, &host)?
            .into_iter()
            .filter(|f| {
                settings
                    .get(&format!("AzureWebJobs.{}.Disabled", f.name))
                    .is_none_or(|v| !v.eq_ignore_ascii_case("true") && v != "1")
            })
            .collect();
        let mut routes = Vec::new();
        let mut queues = Vec::new();
        let mut triggers = Vec::new();
        for f in &functions {
            match &f.trigger {
                Trigger::Http { route, methods } => routes.push(HttpRoute {
                    function: f.name.clone(),
                    path: match host.route_prefix.as_str() {
                        "" => format!("/{route}"),
                        prefix => format!("/{prefix}/{route}"),
                    },
                    methods: methods.clone(),
                }),
                Trigger::Queue {
                    binding,
                    queue_name,
                    connection,
                } => {
                    let indexing =
                        |e: String| format!("Error indexing method 'Functions.{}': {e}", f.name);
                    let queue = settings.queue_name(queue_name).map_err(indexing)?;
                    let connection_string =
                        settings.connection_string(connection).map_err(indexing)?;
                    let client = QueueClient::from_connection_string(&connection_string)
                        .map_err(|e| indexing(format!("connection {connection}: {e}")))?;
                    let poison_queue = format!("{queue}-poison");
                    queues.push(QueueBinding {
                        function: f.name.clone(),
                        queue: queue.clone(),
                        poison_queue: poison_queue.clone(),
                        client,
                    });
                    triggers.push(binding.clone());
                }
            }
        }

        let journal = Arc::new(Journal::new(options.echo));
        if options.create_queues {
            for q in &queues {
                for name in [&q.queue, &q.poison_queue] {
                    q.client.create_queue(name).await.map_err(|e| {
                        format!("function {}: cannot create queue {name}: {e}", q.function)
                    })?;
                }
            }
        }

        let command = worker_command(&app_root, &host, &options, &settings);
        let worker = Worker::start(command, Arc::clone(&journal)).await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port.unwrap_or(0)))
            .await
            .map_err(|e| format!("cannot bind the front end: {e}"))?;
        let base_url = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().map_err(|e| e.to_string())?.port()
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let front = Arc::new(FrontEnd {
            routes: routes.clone(),
            worker: Arc::clone(&worker),
            journal: Arc::clone(&journal),
            function_timeout,
            http: http.clone(),
            // Without either flag no HTTP function is served, so the mode is never used.
            mode: host.http_mode.unwrap_or(HttpMode::Forward),
        });
        let front_end = tokio::spawn(front::serve(listener, front, shutdown_rx.clone()));
        let supervisor = tokio::spawn(Arc::clone(&worker).supervise());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let listeners = queues
            .iter()
            .zip(triggers)
            .map(|(q, binding)| {
                let listener = Arc::new(QueueListener {
                    function: q.function.clone(),
                    binding,
                    queue: q.queue.clone(),
                    poison_queue: q.poison_queue.clone(),
                    client: q.client.clone(),
                    options: queue_options.clone(),
                    peek_lock: options.peek_lock,
                    function_timeout,
                    worker: Arc::clone(&worker),
                    journal: Arc::clone(&journal),
                    http: http.clone(),
                    in_flight: Arc::clone(&in_flight),
                });
                tokio::spawn(listener.run(shutdown_rx.clone()))
            })
            .collect();

        journal.log("Functions:");
        for r in &routes {
            let methods = r
                .methods
                .as_ref()
                .map(|m| m.join(","))
                .unwrap_or_else(|| "*".into());
            journal.log(format!(
                "        {}: [{methods}] {base_url}{}",
                r.function, r.path
            ));
        }
        for q in &queues {
            journal.log(format!(
                "        {}: queueTrigger ({})",
                q.function, q.queue
            ));
        }
        journal.log(format!("Host started; front end on {base_url}"));
        Ok(FunctionsHost {
            base_url,
            journal,
            worker,
            queues,
            in_flight,
            shutdown,
            listeners,
            front_end: Some(front_end),
            supervisor: Some(supervisor),
        })
    }

    /// The front end, e.g. `http://127.0.0.1:7071`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The current worker process (`None` while it is being restarted).
    pub fn handler(&self) -> Option<WorkerInfo> {
        self.worker.info()
    }

    /// Everything every worker process wrote to stdout and stderr, in order.
    pub fn worker_output(&self) -> String {
        self.journal.worker_output()
    }

    /// Every line every worker process wrote, with the severity the host records it at.
    pub fn worker_lines(&self) -> Vec<WorkerLine> {
        self.journal.worker_lines()
    }

    /// SIGKILLs the current worker, as a crash would; the host notices and restarts it.
    /// Returns the killed pid.
    pub fn kill_handler(&self) -> Option<u32> {
        self.worker
            .kill(None, "killed on request (FunctionsHost::kill_handler)")
    }

    /// Every finished invocation, in completion order.
    pub fn invocations(&self) -> Vec<InvocationRecord> {
        self.journal.invocations()
    }

    /// Every message moved to a poison queue.
    pub fn poison_moves(&self) -> Vec<PoisonRecord> {
        self.journal.poison_moves()
    }

    /// The host log so far.
    pub fn log(&self) -> Vec<String> {
        self.journal.lines()
    }

    /// The queue-triggered functions and their resolved queues.
    pub fn queues(&self) -> &[QueueBinding] {
        &self.queues
    }

    /// Waits until `done(self)` holds, re-checking whenever the host records something (and
    /// at least every 100 ms), at most `limit`. The error names `what` and ends with the host
    /// log.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&FunctionsHost) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changes = self.journal.subscribe();
        loop {
            if done(self) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.timed_out(what, limit).await);
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
    }

    /// Waits until every trigger queue is empty (visible or not) and no invocation is running,
    /// at most `limit`.
    pub async fn wait_until_idle(&self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changes = self.journal.subscribe();
        loop {
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                let mut empty = true;
                for q in &self.queues {
                    match q.client.approximate_count(&q.queue).await {
                        Ok(0) => {}
                        Ok(_) => empty = false,
                        Err(e) => return Err(format!("cannot count queue {}: {e}", q.queue)),
                    }
                }
                if empty && self.in_flight.load(Ordering::SeqCst) == 0 {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.timed_out("the queues to drain", limit).await);
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        }
    }

    async fn timed_out(&self, what: &str, limit: Duration) -> String {
        let log = self.journal.lines();
        let tail = &log[log.len().saturating_sub(60)..];
        format!(
            "timed out after {limit:?} waiting for {what}\n--- host log (last {} lines) ---\n{}\n--- {}",
            tail.len(),
            tail.join("\n"),
            self.running_report().await
        )
    }

    /// What this host is doing now, for a test that gave up waiting on it (printed last,
    /// where a truncated CI log still shows it): the worker process, the invocations still
    /// running with the last lines their worker wrote about each, and how many messages each
    /// trigger queue holds (visible or not).
    pub async fn running_report(&self) -> String {
        let worker = match self.worker.info() {
            Some(w) => format!(
                "worker generation {} (pid {}, port {})",
                w.generation, w.pid, w.port
            ),
            None => "no worker process running".into(),
        };
        let mut queues = Vec::new();
        for q in &self.queues {
            queues.push(match q.client.approximate_count(&q.queue).await {
                Ok(n) => format!("queue '{}' holds {n}", q.queue),
                Err(e) => format!("queue '{}' cannot be counted: {e}", q.queue),
            });
        }
        format!(
            "host on {}: {worker}; {}; {} invocation(s) running\n{}\n",
            self.base_url,
            queues.join(", "),
            self.in_flight.load(Ordering::SeqCst),
            self.journal.running_report(5)
        )
    }

    /// Stops: listeners stop polling and let running invocations finish (10 s at most), the
    /// front end stops, then the worker is killed (SIGKILL), as the host disposes a worker.
    /// Returns the whole host log.
    pub async fn stop(mut self) -> Vec<String> {
        self.journal.log("Stopping the host");
        let _ = self.shutdown.send(true);
        for l in std::mem::take(&mut self.listeners) {
            let _ = l.await;
        }
        if let Some(front) = self.front_end.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), front).await;
        }
        self.worker.stop().await;
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.await;
        }
        self.journal.log("Host stopped");
        self.journal.lines()
    }
}

impl Drop for FunctionsHost {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for l in &self.listeners {
            l.abort();
        }
        for task in [self.front_end.take(), self.supervisor.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        self.worker.stop_now();
    }
}

/// The worker command as the host builds it from `customHandler.description`.
fn worker_command(
    app_root: &Path,
    host: &HostJson,
    options: &HostOptions,
    settings: &AppSettings,
) -> WorkerCommand {
    let working_dir = match &host.working_directory {
        Some(dir) => app_root.join(dir),
        None => app_root.to_path_buf(),
    };
    let program = match (&options.handler, &host.executable) {
        (Some(path), _) => path.clone(),
        (None, Some(exe)) => {
            let exe = settings.expand_lenient(exe);
            let under_root = app_root.join(&exe);
            if under_root.is_file() {
                under_root
            } else {
                PathBuf::from(exe)
            }
        }
        (None, None) => PathBuf::from("handler"),
    };
    let (env, env_remove) = settings
        .pairs()
        .iter()
        .cloned()
        .partition::<Vec<_>, _>(|(_, v)| !v.is_empty());
    WorkerCommand {
        program,
        args: host
            .arguments
            .iter()
            .map(|a| settings.expand_lenient(a))
            .collect(),
        working_dir: Some(working_dir),
        app_root: app_root.to_path_buf(),
        env,
        env_remove: env_remove.into_iter().map(|(k, _)| k).collect(),
    }
}
