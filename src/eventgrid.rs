//! Event Grid webhook deliveries: both schemas, the handshakes, and event classification. Pure.
//!
//! * Event Grid schema: `application/json`, always an array (a batch of 1 to 5000 events).
//! * CloudEvents 1.0: `application/cloudevents+json` (one object) or
//!   `application/cloudevents-batch+json` (an array); Event Grid checks the endpoint first with
//!   an `OPTIONS` abuse-protection handshake instead of a validation event.
//!
//! A delivery is first checked as a whole ([`parse_delivery`]: media type, JSON, shape); then
//! each event stands alone, so one bad event never costs the others ([`Delivery::events`]).

use serde_json::Value;

/// Event type of the Event Grid schema's subscription validation handshake.
pub const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
/// Event type sent when a subscription is deleted (`SubscriptionDeletedEventData` in the Event
/// Grid SDKs' system-event lists).
pub const DELETION_EVENT: &str = "Microsoft.EventGrid.SubscriptionDeletedEvent";

/// Which schema an event is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Event Grid's own schema (`eventType`, `eventTime`, `dataVersion`, ...).
    EventGrid,
    /// CloudEvents 1.0 (`specversion`, `type`, `source`, `time`, ...).
    CloudEvents,
}

/// What the `Content-Type` of a delivery announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json` (Event Grid schema; also tolerated for CloudEvents).
    Json,
    /// `application/cloudevents+json`: one structured CloudEvent.
    CloudEvent,
    /// `application/cloudevents-batch+json`: an array of CloudEvents.
    CloudEventBatch,
}

/// Why a whole delivery cannot be processed. Each maps to one HTTP status, always a 4xx,
/// because sending the same bytes again can never succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The body is not JSON in a media type we read.
    #[error("unsupported content type `{0}`: send application/json, application/cloudevents+json or application/cloudevents-batch+json")]
    UnsupportedMediaType(String),
    /// The body is not valid JSON.
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The JSON is not an event or an array of events.
    #[error("body must be an array of events (or one CloudEvent object), found {0}")]
    NotEvents(&'static str),
    /// The array is empty.
    #[error("delivery holds no events")]
    Empty,
    /// The body is larger than allowed.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes received (or announced).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl DeliveryError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            DeliveryError::UnsupportedMediaType(_) => 415,
            DeliveryError::TooLarge { .. } => 413,
            _ => 400,
        }
    }
}

/// Reads the media type from a `Content-Type` header value. A missing header is read as JSON:
/// Event Grid always sends one, and refusing a body we can read would lose events.
pub fn media_type(content_type: Option<&str>) -> Result<MediaType, DeliveryError> {
    let Some(raw) = content_type else {
        return Ok(MediaType::Json);
    };
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "text/json" => Ok(MediaType::Json),
        "application/cloudevents+json" => Ok(MediaType::CloudEvent),
        "application/cloudevents-batch+json" => Ok(MediaType::CloudEventBatch),
        _ => Err(DeliveryError::UnsupportedMediaType(raw.to_string())),
    }
}

/// A delivery whose body parsed: the raw items, each to be read on its own.
#[derive(Debug)]
pub struct Delivery {
    items: Vec<Value>,
}

/// Parses a delivery body. Whatever the JSON media type, an object is read as a single event
/// and an array as a batch: CloudEvents structured mode sends one object, Event Grid always
/// sends arrays, and being strict about which goes with which would only lose events.
pub fn parse_delivery(body: &[u8]) -> Result<Delivery, DeliveryError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DeliveryError::MalformedJson(format!("{e}")))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(_) => vec![value],
        other => return Err(DeliveryError::NotEvents(json_kind(&other))),
    };
    if items.is_empty() {
        return Err(DeliveryError::Empty);
    }
    Ok(Delivery { items })
}

impl Delivery {
    /// How many items the delivery holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the delivery holds no items (never true after [`parse_delivery`]).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Each item read as an event, or the reason it cannot be, with the raw item kept for the
    /// log.
    pub fn events(&self) -> impl Iterator<Item = Result<Event<'_>, RejectedEvent<'_>>> {
        self.items.iter().enumerate().map(|(position, raw)| {
            Event::read(raw).map_err(|reason| RejectedEvent {
                position,
                reason,
                raw,
            })
        })
    }
}

/// An event that cannot be processed, with its raw JSON for inspection.
#[derive(Debug)]
pub struct RejectedEvent<'a> {
    /// Its position in the delivery.
    pub position: usize,
    /// Why it is rejected, naming the field.
    pub reason: String,
    /// The event as received.
    pub raw: &'a Value,
}

/// One event's envelope, in either schema.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// `id`: unique per event, stable across redeliveries.
    pub id: &'a str,
    /// `eventType` / `type`.
    pub event_type: &'a str,
    /// `subject`.
    pub subject: Option<&'a str>,
    /// `eventTime` / `time`.
    pub time: Option<&'a str>,
    /// `data` (`Null` when absent).
    pub data: &'a Value,
    /// The schema the event is written in.
    pub schema: Schema,
}

static NULL: Value = Value::Null;

impl<'a> Event<'a> {
    /// Reads one event in either schema, or says which field is missing.
    pub fn read(raw: &'a Value) -> Result<Event<'a>, String> {
        let obj = raw
            .as_object()
            .ok_or_else(|| format!("event must be an object, found {}", json_kind(raw)))?;
        // The spec example spells it `specVersion`; the CloudEvents spec says `specversion`.
        let schema = if obj.contains_key("specversion") || obj.contains_key("specVersion") {
            Schema::CloudEvents
        } else {
            Schema::EventGrid
        };
        let (type_field, time_field) = match schema {
            Schema::EventGrid => ("eventType", "eventTime"),
            Schema::CloudEvents => ("type", "time"),
        };
        let text = |name: &str| {
            obj.get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let id = text("id").ok_or("id: is required")?;
        let event_type = text(type_field).ok_or_else(|| format!("{type_field}: is required"))?;
        if schema == Schema::CloudEvents
            && obj.get("data").is_none()
            && obj.contains_key("data_base64")
        {
            return Err(
                "data_base64: binary CloudEvents data is not supported, send JSON data".into(),
            );
        }
        Ok(Event {
            id,
            event_type,
            subject: text("subject"),
            time: text(time_field),
            data: obj.get("data").unwrap_or(&NULL),
            schema,
        })
    }

    /// What kind of event this is. Type names are compared case-insensitively, as Event Grid
    /// and the official samples do.
    pub fn kind(&self) -> EventKind<'a> {
        let t = self.event_type;
        if t.eq_ignore_ascii_case(VALIDATION_EVENT) {
            match self.data.get("validationCode").and_then(Value::as_str) {
                Some(code) if !code.is_empty() => EventKind::Validation {
                    code,
                    url: self.data.get("validationUrl").and_then(Value::as_str),
                },
                _ => EventKind::Invalid("data.validationCode: is required"),
            }
        } else if t.eq_ignore_ascii_case(DELETION_EVENT) {
            EventKind::SubscriptionDeletion
        } else if t.eq_ignore_ascii_case(crate::recording::RECORDING_EVENT_TYPE) {
            EventKind::Recording
        } else {
            EventKind::Other
        }
    }
}

/// What an event asks of us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind<'a> {
    /// Answer `{"validationResponse": code}`.
    Validation {
        /// `data.validationCode`.
        code: &'a str,
        /// `data.validationUrl` (for manual validation within 5 minutes).
        url: Option<&'a str>,
    },
    /// The subscription is being deleted: acknowledge.
    SubscriptionDeletion,
    /// A recording is ready: archive its chunks.
    Recording,
    /// Any other event type: acknowledge and log.
    Other,
    /// A known event type with unusable data.
    Invalid(&'static str),
}

/// The CloudEvents abuse-protection handshake (`OPTIONS` with `WebHook-Request-Origin`): the
/// headers that grant the origin permission to deliver. `None` when the request carries no
/// origin, which means it is not a handshake (the answer then grants nothing).
pub fn abuse_protection_grant(
    origin: Option<&str>,
    requested_rate: Option<&str>,
) -> Option<Vec<(&'static str, String)>> {
    let origin = origin.map(str::trim).filter(|o| !o.is_empty())?;
    // Any requested rate is granted: the webhook only enqueues work, so its rate is not the
    // bottleneck. "*" means no limit.
    let rate = requested_rate
        .map(str::trim)
        .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("*");
    Some(vec![
        ("WebHook-Allowed-Origin", origin.to_string()),
        ("WebHook-Allowed-Rate", rate.to_string()),
    ])
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_read_with_parameters_and_any_case() {
        assert_eq!(
            media_type(Some("application/json; charset=utf-8")),
            Ok(MediaType::Json)
        );
        assert_eq!(
            media_type(Some("Application/CloudEvents+JSON; charset=utf-8")),
            Ok(MediaType::CloudEvent)
        );
        assert_eq!(
            media_type(Some("application/cloudevents-batch+json")),
            Ok(MediaType::CloudEventBatch)
        );
        assert_eq!(media_type(None), Ok(MediaType::Json));
        let err = media_type(Some("text/plain")).unwrap_err();
        assert_eq!(err.status(), 415);
    }

    #[test]
    fn whole_delivery_errors_are_4xx_with_reasons() {
        let err = parse_delivery(b"[{\"id\": ").unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("line 1"), "{err}");
        assert_eq!(parse_delivery(b"[]").unwrap_err(), DeliveryError::Empty);
        assert_eq!(
            parse_delivery(b"42").unwrap_err(),
            DeliveryError::NotEvents("a number")
        );
    }

    #[test]
    fn each_event_is_read_on_its_own() {
        let body = br#"[{"id":"a","eventType":"X","data":{}}, 7, {"eventType":"Y"}, {"id":"c","specversion":"1.0","type":"Z","time":"t"}]"#;
        let d = parse_delivery(body).unwrap();
        let results: Vec<_> = d.events().collect();
        assert_eq!(results.len(), 4);
        assert_eq!(results[0].as_ref().unwrap().schema, Schema::EventGrid);
        assert_eq!(
            results[1].as_ref().unwrap_err().reason,
            "event must be an object, found a number"
        );
        assert_eq!(results[2].as_ref().unwrap_err().reason, "id: is required");
        let ce = results[3].as_ref().unwrap();
        assert_eq!(
            (ce.schema, ce.event_type, ce.time),
            (Schema::CloudEvents, "Z", Some("t"))
        );
    }

    #[test]
    fn validation_without_code_is_invalid() {
        let body = br#"[{"id":"v","eventType":"microsoft.eventgrid.subscriptionvalidationevent","data":{}}]"#;
        let d = parse_delivery(body).unwrap();
        let e = d.events().next().unwrap().unwrap();
        assert_eq!(
            e.kind(),
            EventKind::Invalid("data.validationCode: is required")
        );
    }

    #[test]
    fn abuse_protection_grants_the_origin_and_rate() {
        assert_eq!(abuse_protection_grant(None, None), None);
        let grant = abuse_protection_grant(Some("eventgrid.azure.net"), Some("120")).unwrap();
        assert_eq!(
            grant,
            vec![
                ("WebHook-Allowed-Origin", "eventgrid.azure.net".into()),
                ("WebHook-Allowed-Rate", "120".into())
            ]
        );
        let grant = abuse_protection_grant(Some("eventgrid.azure.net"), None).unwrap();
        assert_eq!(grant[1].1, "*");
    }

    mod fixtures {
        use super::super::*;
        use crate::recording::{parse_recording_data, ChunkJob, ChunkSource, EventContext};

        fn jobs(body: &str) -> Vec<ChunkJob> {
            let delivery = parse_delivery(body.as_bytes()).unwrap();
            let mut jobs = Vec::new();
            for event in delivery.events() {
                let event = event.unwrap();
                assert_eq!(event.kind(), EventKind::Recording);
                let ctx = EventContext {
                    id: event.id,
                    subject: event.subject,
                    time: event.time,
                };
                let parsed = parse_recording_data(ctx, event.data).unwrap();
                assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
                jobs.extend(parsed.jobs);
            }
            jobs
        }

        #[test]
        fn preview_shape_has_only_the_document_id() {
            let jobs = jobs(include_str!("../tests/data/recording_preview.json"));
            assert_eq!(jobs.len(), 1);
            let j = &jobs[0];
            assert_eq!(j.document_id, "0-eus-d12-801b3f3fc462fe8a01e6810cbff729b8");
            assert_eq!((j.index, j.chunk_count), (0, 1));
            assert_eq!(j.source, ChunkSource::Preview);
            assert_eq!(j.end_reason.as_deref(), Some("SessionEnded"));
            assert_eq!(
                j.recording_start_time.as_deref(),
                Some("2021-07-27T15:20:23.6089755Z")
            );
            assert_eq!(j.recording_duration_ms, Some(6620));
            assert_eq!(j.session_end_reason.as_deref(), Some("CallEnded"));
            assert_eq!(j.call.recording_id.as_deref(), Some("{recording-id}"));
            assert_eq!(j.format_type, None);
        }

        #[test]
        fn public_preview_shape_uses_the_locations() {
            let jobs = jobs(include_str!("../tests/data/recording_public_preview.json"));
            let ChunkSource::Located {
                content,
                metadata,
                delete,
            } = &jobs[0].source
            else {
                panic!("{:?}", jobs[0].source)
            };
            assert!(content.as_str().ends_with("/content/video"));
            assert!(metadata
                .as_ref()
                .unwrap()
                .as_str()
                .ends_with("/content/acsmetadata"));
            assert_eq!(delete, &None);
            assert_eq!(
                jobs[0].call.server_call_id.as_deref(),
                Some("{serverCallId}")
            );
        }

        #[test]
        fn ga_shape_in_both_schemas_gives_the_same_job() {
            let eg = jobs(include_str!("../tests/data/recording_ga.json"));
            let ce = jobs(include_str!("../tests/data/recording_ga_cloudevent.json"));
            assert_eq!(eg, ce);
            let j = &eg[0];
            assert_eq!(j.event_id, "7283825e-f8f1-4c61-a9ea-752c56890500");
            assert_eq!(
                (
                    j.content_type.as_deref(),
                    j.channel_type.as_deref(),
                    j.format_type.as_deref()
                ),
                (Some("Audio"), Some("Mixed"), Some("Mp3"))
            );
            assert_eq!(j.call.call_id.as_deref(), Some("{call-id}"));
            assert_eq!(j.call.recording_id.as_deref(), Some("{recording-id}"));
            let ChunkSource::Located { delete, .. } = &j.source else {
                panic!()
            };
            assert_eq!(
                delete.as_ref().unwrap().path(),
                "/v1/objects/0-eus-d12-801b3f3fc462fe8a01e6810cbff729b8/content/deletedata",
                "the REST spec example's deleteLocation form"
            );
        }

        #[test]
        fn event_grid_docs_sample_gives_every_id_and_its_delete_url() {
            let jobs = jobs(include_str!("../tests/data/recording_ga_docs_sample.json"));
            let j = &jobs[0];
            assert_eq!(
                (
                    j.call.call_id.as_deref(),
                    j.call.server_call_id.as_deref(),
                    j.call.recording_id.as_deref()
                ),
                (
                    Some("{call-id}"),
                    Some("{server-call-id}"),
                    Some("{recording-id}")
                )
            );
            let ChunkSource::Located { delete, .. } = &j.source else {
                panic!("{:?}", j.source)
            };
            assert_eq!(
                delete.as_ref().unwrap().as_str(),
                "https://us-storage.asm.skype.com/v1/objects/0-eus-d1-83e9599991e21ad21220427d78fbf558",
                "the docs sample's deleteLocation form, kept as sent"
            );
            let t =
                crate::config::BlobNameTemplate::parse("{recordingId}/{documentId}.{ext}").unwrap();
            assert_eq!(
                j.blob_names(&t, crate::recording::MediaFormat::MP4).media,
                "_recording-id_/0-eus-d12-801b3f3fc462fe8a01e6810cbff729b8.mp4"
            );
        }

        #[test]
        fn three_chunk_recording_gives_three_ordered_jobs() {
            let jobs = jobs(include_str!("../tests/data/recording_ga_three_chunks.json"));
            let idx: Vec<_> = jobs.iter().map(|j| (j.index, j.chunk_count)).collect();
            assert_eq!(idx, [(0, 3), (1, 3), (2, 3)]);
            assert_eq!(
                jobs[0].call.call_id.as_deref(),
                Some("6c1f0e3a-8a44-4c2b-9b0e-5f6d7e8f9a0b")
            );
        }

        #[test]
        fn handshake_and_other_fixtures_classify() {
            let d =
                parse_delivery(include_bytes!("../tests/data/eventgrid_validation.json")).unwrap();
            let e = d.events().next().unwrap().unwrap();
            assert!(matches!(
                e.kind(),
                EventKind::Validation {
                    code: "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                    url: Some(_)
                }
            ));
            let d = parse_delivery(include_bytes!(
                "../tests/data/eventgrid_subscription_deletion.json"
            ))
            .unwrap();
            assert_eq!(
                d.events().next().unwrap().unwrap().kind(),
                EventKind::SubscriptionDeletion
            );
            let d = parse_delivery(include_bytes!("../tests/data/other_event_type.json")).unwrap();
            assert_eq!(d.events().next().unwrap().unwrap().kind(), EventKind::Other);
        }

        #[test]
        fn missing_document_id_is_named() {
            let d = parse_delivery(include_bytes!(
                "../tests/data/recording_missing_document_id.json"
            ))
            .unwrap();
            let e = d.events().next().unwrap().unwrap();
            let ctx = EventContext {
                id: e.id,
                subject: e.subject,
                time: e.time,
            };
            let parsed = parse_recording_data(ctx, e.data).unwrap();
            assert!(parsed.jobs.is_empty());
            assert_eq!(
                parsed.rejected[0].field,
                "data.recordingStorageInfo.recordingChunks[0].documentId"
            );
        }
    }
}
