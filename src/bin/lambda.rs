//! The AWS Lambda entry point: reads settings once, builds the app, serves Lambda HTTP events
//! (function URL or API Gateway) with the same core as the Functions `handler`.
//!
//! It refuses to start without `WEBHOOK_KEYS` (unless `WEBHOOK_ALLOW_ANONYMOUS=true`): a
//! function URL is open to the internet, and this webhook writes blobs and fetches recordings.

use lambda_http::{service_fn, Error, Request};
use recording_archiver::config::{env_lookup, Settings, WebhookAuth};
use recording_archiver::host::lambda;
use recording_archiver::wiring;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wiring::install_tls_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .without_time()
        .init();
    let (app, auth) = match start() {
        Ok(started) => started,
        Err(e) => {
            report_init_error(&e).await;
            return Err(e.into());
        }
    };
    if auth == WebhookAuth::Anonymous {
        tracing::warn!("WEBHOOK_ALLOW_ANONYMOUS=true: the webhook answers callers without a key");
    }
    let (app, auth) = (&app, &auth);
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(lambda::handle(app, auth, request).await)
    }))
    .await
}

fn start() -> Result<(recording_archiver::app::App, WebhookAuth), String> {
    let settings = Settings::load(&env_lookup).map_err(|e| e.to_string())?;
    let auth = settings.webhook_keys.require().map_err(|e| e.to_string())?;
    let app = wiring::build_app(&settings, &env_lookup).map_err(|e| e.to_string())?;
    Ok((app, auth))
}

/// Tells Lambda why initialisation failed (the Runtime API's `/runtime/init/error`), so the
/// reason shows in the invocation error and not only in the log.
async fn report_init_error(message: &str) {
    eprintln!("lambda: {message}");
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let sent = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.ConfigError")
        .json(&serde_json::json!({ "errorType": "Runtime.ConfigError", "errorMessage": message }))
        .send()
        .await;
    if let Err(e) = sent {
        eprintln!("lambda: could not report the init error: {e}");
    }
}
