//! Event Grid webhook deliveries: both schemas, the handshakes, and event classification. Pure.
//!
//! * Event Grid schema: `application/json`, always an array (a batch of 1 to 5000 events).
//! * CloudEvents 1.0: `application/cloudevents+json` (one object) or
//!   `application/cloudevents-batch+json` (an array); Event Grid checks the endpoint first with
//!   an `OPTIONS` abuse-protection handshake instead of a validation event.
//!
//! A delivery is first checked as a whole ([`parse_delivery`]: media type, JSON, shape, at most
//! `MAX_EVENTS_PER_DELIVERY` events); then each event stands alone, so one bad event never
//! costs the others ([`Delivery::events`]). Events are read from borrowed slices of the body
//! (see [`crate::json`]), so reading a delivery costs about its size whatever its shape.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json;

/// Most events one delivery may hold: Event Grid's largest batch (`maxEventsPerBatch` is 1 to
/// 5000). A longer array cannot come from Event Grid and is refused before it is read whole.
pub(crate) const MAX_EVENTS_PER_DELIVERY: usize = 5000;

/// Event type of the Event Grid schema's subscription validation handshake.
pub(crate) const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
/// Event type sent when a subscription is deleted (`SubscriptionDeletedEventData` in the Event
/// Grid SDKs' system-event lists).
pub(crate) const DELETION_EVENT: &str = "Microsoft.EventGrid.SubscriptionDeletedEvent";

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
pub(crate) enum MediaType {
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
    /// The body is empty. Event Grid always sends one; a request without `Content-Length`
    /// (chunked) arrives empty when the Functions host rebuilds it
    /// (`enableForwardingHttpRequest` copies a body only when `Content-Length > 0`).
    #[error("body is empty: send the events with a Content-Length header (the Functions host's request forwarding drops a chunked body)")]
    EmptyBody,
    /// The body is not valid JSON.
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The JSON is not an event or an array of events.
    #[error("body must be an array of events (or one CloudEvent object), found {0}")]
    NotEvents(&'static str),
    /// The array is empty.
    #[error("delivery holds no events")]
    Empty,
    /// More events than any Event Grid batch holds.
    #[error("delivery holds more than {0} events, more than Event Grid ever sends at once")]
    TooManyEvents(usize),
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
pub(crate) fn media_type(content_type: Option<&str>) -> Result<MediaType, DeliveryError> {
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
pub struct Delivery<'a> {
    items: Vec<&'a RawValue>,
}

/// Parses a delivery body. Whatever the JSON media type, an object is read as a single event
/// and an array as a batch: CloudEvents structured mode sends one object, Event Grid always
/// sends arrays, and being strict about which goes with which would only lose events.
pub fn parse_delivery(body: &[u8]) -> Result<Delivery<'_>, DeliveryError> {
    if body.trim_ascii().is_empty() {
        return Err(DeliveryError::EmptyBody);
    }
    let value: &RawValue =
        serde_json::from_slice(body).map_err(|e| DeliveryError::MalformedJson(format!("{e}")))?;
    let items = match json::array(value, MAX_EVENTS_PER_DELIVERY) {
        Ok(items) => items,
        Err(json::ArrayError::TooLong { max }) => return Err(DeliveryError::TooManyEvents(max)),
        Err(json::ArrayError::NotArray(_)) if json::is_object(value) => vec![value],
        Err(json::ArrayError::NotArray(kind)) => return Err(DeliveryError::NotEvents(kind)),
    };
    if items.is_empty() {
        return Err(DeliveryError::Empty);
    }
    Ok(Delivery { items })
}

impl<'a> Delivery<'a> {
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
    pub fn events(&self) -> impl Iterator<Item = Result<Event<'a>, RejectedEvent<'a>>> + '_ {
        self.items.iter().enumerate().map(|(position, &raw)| {
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
    pub raw: &'a RawValue,
}

/// One event's envelope, in either schema. Strings borrow from the body unless they hold
/// escapes.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// `id`: unique per event, stable across redeliveries.
    pub id: Cow<'a, str>,
    /// `eventType` / `type`.
    pub event_type: Cow<'a, str>,
    /// `subject`.
    pub subject: Option<Cow<'a, str>>,
    /// `eventTime` / `time`.
    pub time: Option<Cow<'a, str>>,
    /// `data` (`None` when absent or null).
    pub data: Option<&'a RawValue>,
    /// The schema the event is written in.
    pub schema: Schema,
    /// The event as received.
    pub raw: &'a RawValue,
}

/// The envelope fields either schema may use; all others are skipped unread.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "eventType")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    ce_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    subject: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "eventTime")]
    event_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    specversion: Option<&'a RawValue>,
    // The spec example spells it `specVersion`; the CloudEvents spec says `specversion`.
    #[serde(borrow, default, rename = "specVersion")]
    spec_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data_base64: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValidationData<'a> {
    #[serde(borrow, default)]
    validation_code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    validation_url: Option<&'a RawValue>,
}

impl<'a> Event<'a> {
    /// Reads one event in either schema, or says which field is missing.
    pub fn read(raw: &'a RawValue) -> Result<Event<'a>, String> {
        if !json::is_object(raw) {
            return Err(format!(
                "event must be an object, found {}",
                json::kind(raw)
            ));
        }
        let env: Envelope<'a> = json::object(raw).map_err(|e| format!("event {e}"))?;
        let schema = if env.specversion.is_some() || env.spec_version.is_some() {
            Schema::CloudEvents
        } else {
            Schema::EventGrid
        };
        let (type_field, event_type, time) = match schema {
            Schema::EventGrid => ("eventType", env.event_type, env.event_time),
            Schema::CloudEvents => ("type", env.ce_type, env.time),
        };
        let id = json::text(env.id).ok_or("id: is required")?;
        let event_type =
            json::text(event_type).ok_or_else(|| format!("{type_field}: is required"))?;
        if schema == Schema::CloudEvents && env.data.is_none() && env.data_base64.is_some() {
            return Err(
                "data_base64: binary CloudEvents data is not supported, send JSON data".into(),
            );
        }
        Ok(Event {
            id,
            event_type,
            subject: json::text(env.subject),
            time: json::text(time),
            data: env.data,
            schema,
            raw,
        })
    }

    /// What kind of event this is. Type names are compared case-insensitively, as Event Grid
    /// and the official samples do.
    pub fn kind(&self) -> EventKind<'a> {
        let t = &*self.event_type;
        if t.eq_ignore_ascii_case(VALIDATION_EVENT) {
            let data = self
                .data
                .and_then(|d| json::object::<ValidationData<'a>>(d).ok());
            match data.as_ref().and_then(|d| json::text(d.validation_code)) {
                Some(code) => EventKind::Validation {
                    code,
                    url: data.and_then(|d| json::text(d.validation_url)),
                },
                None => EventKind::Invalid("data.validationCode: is required"),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind<'a> {
    /// Answer `{"validationResponse": code}`.
    Validation {
        /// `data.validationCode`.
        code: Cow<'a, str>,
        /// `data.validationUrl` (for manual validation within 5 minutes).
        url: Option<Cow<'a, str>>,
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
pub(crate) fn abuse_protection_grant(
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
        let batch = format!("[{}{{}}]", "{},".repeat(MAX_EVENTS_PER_DELIVERY));
        let err = parse_delivery(batch.as_bytes()).unwrap_err();
        assert_eq!(err, DeliveryError::TooManyEvents(MAX_EVENTS_PER_DELIVERY));
        assert_eq!(err.status(), 400);
        let err = parse_delivery(b" \r\n").unwrap_err();
        assert_eq!((err.clone(), err.status()), (DeliveryError::EmptyBody, 400));
        assert!(err.to_string().contains("Content-Length"), "{err}");
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
            (ce.schema, &*ce.event_type, ce.time.as_deref()),
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
                    id: &event.id,
                    subject: event.subject.as_deref(),
                    time: event.time.as_deref(),
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
            assert_eq!(&*j.event_id, "7283825e-f8f1-4c61-a9ea-752c56890500");
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
            let EventKind::Validation { code, url } = e.kind() else {
                panic!("{:?}", e.kind())
            };
            assert_eq!(code, "512d38b6-c7b8-40c8-89fe-f46f9e9622b6");
            assert!(url.is_some());
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
                id: &e.id,
                subject: e.subject.as_deref(),
                time: e.time.as_deref(),
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
