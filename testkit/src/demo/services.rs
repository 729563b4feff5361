//! The services the demo runs around the handler, started in order and all stopped, whatever
//! happened.

use std::time::{Duration, Instant};

use super::{
    human_size, say, unique_stamp, DemoError, DemoOptions, CONTAINER, FORMAT, NOTIFY_QUEUE,
    POLLING_INTERVAL, RETRY_DELAY, TRANSFER_QUEUE,
};
use crate::acs::{AcsEmulator, AcsEmulatorConfig};
use crate::azurite::Azurite;
use crate::host::{FunctionsHost, HostOptions};

/// What the demo started, so that it can stop exactly that, whatever happened.
#[derive(Default)]
pub(super) struct Services {
    pub(super) azurite: Option<Azurite>,
    /// The emulator and the recording's document ids, in chunk order.
    pub(super) acs: Option<(AcsEmulator, Vec<String>)>,
    pub(super) host: Option<FunctionsHost>,
}

impl Services {
    pub(super) async fn start(&mut self, options: &DemoOptions) -> Result<(), DemoError> {
        let started = Instant::now();
        // Azurite::start blocks while Node starts (1-3 s).
        let azurite = tokio::task::spawn_blocking(Azurite::start)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|reason| DemoError::Start {
                service: "Azurite",
                reason,
            })?;
        say(
            1,
            &format!(
                "Azurite (Blob and Queue storage, in memory) is up in {:.1} s: blobs at {}",
                started.elapsed().as_secs_f64(),
                azurite.blob_endpoint()
            ),
        );
        let storage = azurite.connection_string();
        self.azurite = Some(azurite);

        let acs = AcsEmulator::start(AcsEmulatorConfig::default())
            .await
            .map_err(|e| DemoError::Start {
                service: "the ACS emulator",
                reason: e.to_string(),
            })?;
        let stamp = unique_stamp();
        let documents: Vec<String> = (0..options.chunk_sizes.len())
            .map(|i| format!("0-demo-d{i}-{stamp}"))
            .collect();
        for (i, (doc, size)) in documents.iter().zip(&options.chunk_sizes).enumerate() {
            if options.withhold_chunk != Some(i) {
                acs.add_recording(doc, *size, i as u64 + 1, FORMAT);
            }
        }
        let sizes: Vec<String> = options.chunk_sizes.iter().map(|s| human_size(*s)).collect();
        say(
            2,
            &format!(
                "The emulated ACS recording store holds one {} recording in {} chunks ({}), \
                 at {}; it checks every request's HMAC signature like ACS",
                FORMAT.content_type(),
                documents.len(),
                sizes.join(", "),
                acs.storage_authority()
            ),
        );
        if let Some(i) = options.withhold_chunk {
            println!("      (chunk {i} is withheld on purpose: its download will get 404)");
        }
        let app_settings = local_settings(&storage, &acs);
        self.acs = Some((acs, documents));

        let started = Instant::now();
        let host = FunctionsHost::start_with(
            &options.app_root,
            HostOptions {
                handler: Some(options.handler.clone()),
                app_settings,
                max_polling_interval: Some(POLLING_INTERVAL),
                visibility_timeout: Some(RETRY_DELAY),
                echo: options.echo_host_log || HostOptions::default().echo,
                ..HostOptions::default()
            },
        )
        .await
        .map_err(|reason| DemoError::Start {
            service: "the Functions host with the handler",
            reason,
        })?;
        let pid = host
            .handler()
            .map_or_else(|| "?".to_string(), |w| w.pid.to_string());
        say(
            3,
            &format!(
                "The Functions host runs the handler (pid {pid}, ready in {:.1} s) with the repo's \
                 host.json: RecordingWebhook at {}/api/RecordingWebhook, RecordingTransfer on \
                 queue `{TRANSFER_QUEUE}`",
                started.elapsed().as_secs_f64(),
                host.base_url()
            ),
        );
        self.host = Some(host);
        Ok(())
    }

    /// Stops the host (SIGTERM to the handler, as the host does), the emulator and Azurite,
    /// and waits until Azurite's ports are closed: dropping it sends SIGKILL to Node, which
    /// takes a moment to release an in-memory store of a few hundred MiB.
    pub(super) async fn stop(self) -> Result<(), String> {
        if let Some(host) = self.host {
            host.stop().await;
        }
        if let Some((acs, _)) = self.acs {
            acs.stop().await;
        }
        let Some(azurite) = self.azurite else {
            return Ok(());
        };
        let ports = [azurite.blob_port(), azurite.queue_port()];
        drop(azurite);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in ports {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                if Instant::now() >= deadline {
                    return Err(format!("Azurite still listens on port {port}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

/// The "Values" a user would put in local.settings.json for this machine.
pub(super) fn local_settings(storage: &str, acs: &AcsEmulator) -> Vec<(String, String)> {
    [
        ("FUNCTIONS_WORKER_RUNTIME", "Custom".to_string()),
        ("AzureWebJobsStorage", storage.to_string()),
        ("ACS_CONNECTION_STRING", acs.connection_string()),
        ("ACS_EXTRA_ALLOWED_HOSTS", acs.extra_allowed_hosts()),
        ("RECORDINGS_STORAGE", storage.to_string()),
        ("RECORDINGS_CONTAINER", CONTAINER.to_string()),
        ("ARCHIVE_MODE", "queue".to_string()),
        ("TRANSFER_QUEUE", TRANSFER_QUEUE.to_string()),
        ("ARCHIVED_NOTIFY_QUEUE", NOTIFY_QUEUE.to_string()),
        ("RUST_LOG", "info".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
