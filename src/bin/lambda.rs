//! The AWS Lambda entry point: reads settings once, builds the app, serves Lambda HTTP events
//! (function URL or API Gateway) with the same core as the Functions `handler`.

use lambda_http::{service_fn, Error, Request};
use recording_archiver::config::{env_lookup, Settings};
use recording_archiver::host::lambda;
use recording_archiver::wiring;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .without_time()
        .init();
    let settings = Settings::load(&env_lookup)?;
    let app = wiring::build_app(&settings, &env_lookup)?;
    let app = &app;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(lambda::handle(app, request).await)
    }))
    .await
}
