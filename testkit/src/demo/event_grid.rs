//! What Event Grid sends the webhook: the subscription handshake and a delivery.

use std::time::SystemTime;

use serde_json::{json, Value};

/// The event Event Grid sends when a subscription is created.
pub(super) fn validation_event(code: &str) -> Value {
    json!([{
        "id": format!("validation-{code}"),
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-demo/providers/Microsoft.Communication/CommunicationServices/emulated",
        "subject": "",
        "data": {
            "validationCode": code,
            "validationUrl": format!("https://rp-local.eventgrid.azure.net/eventsubscriptions/recording-archiver/validate?id={code}"),
        },
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": rfc3339(SystemTime::now()),
        "metadataVersion": "1",
        "dataVersion": "2",
    }])
}

/// POSTs `body` to the webhook as Event Grid does; the status and the JSON answer.
pub(super) async fn post_event(
    http: &reqwest::Client,
    url: &str,
    event_type: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let r = http
        .post(url)
        .header("Content-Type", "application/json")
        .header("aeg-event-type", event_type)
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        ))
        .unwrap_or_default()
}
