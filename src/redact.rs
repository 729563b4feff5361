//! What of a request may reach a log line: every string that came from the network is clipped
//! to a fixed length, and URL query values (SAS signatures, validation tokens, function keys)
//! are replaced by `***`. Pure functions, used wherever input is logged.
//!
//! The bound matters under load: one 1 MB event id or subject repeated in every line of a
//! request would turn 10,000 requests into gigabytes of log.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

/// Longest identifier logged (event ids, document ids, invocation ids, paths, event types):
/// real ones are GUIDs or short base64 strings, far below this.
pub(crate) const MAX_ID_CHARS: usize = 128;

/// Longest rejected event logged: enough to recognise it and replay it from the sender's copy.
pub(crate) const MAX_EVENT_CHARS: usize = 2048;

/// Longest reason or error message logged.
pub(crate) const MAX_REASON_CHARS: usize = 512;

/// `s` cut to at most `max` characters, saying how much was left out.
pub(crate) fn clip(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}…(+{} bytes)", &s[..cut], s.len() - cut)),
    }
}

/// An identifier fit for a log field.
pub fn id(s: &str) -> Cow<'_, str> {
    clip(s, MAX_ID_CHARS)
}

/// A reason or error message fit for a log field.
pub fn reason(s: &str) -> Cow<'_, str> {
    clip(s, MAX_REASON_CHARS)
}

/// A URL with every query value except `api-version` replaced by `***`; anything that is
/// not an absolute URL with a query is returned unchanged.
pub fn url(s: &str) -> Cow<'_, str> {
    let Ok(parsed) = url::Url::parse(s) else {
        return Cow::Borrowed(s);
    };
    if parsed.query().is_none() {
        return Cow::Borrowed(s);
    }
    let mut shown = parsed.clone();
    shown.set_query(None);
    let mut query = String::new();
    for (name, value) in parsed.query_pairs() {
        if !query.is_empty() {
            query.push('&');
        }
        let value = if name.eq_ignore_ascii_case("api-version") {
            value
        } else {
            Cow::Borrowed("***")
        };
        let _ = write!(query, "{name}={value}");
    }
    shown.set_query(Some(&query));
    Cow::Owned(shown.to_string())
}

/// A JSON value (a rejected event) as one bounded log field: URL queries redacted in every
/// string, then the whole cut to `MAX_EVENT_CHARS`.
pub fn event(raw: &Value) -> String {
    let mut budget = MAX_EVENT_CHARS;
    let redacted = redact_strings(raw, &mut budget);
    clip(&redacted.to_string(), MAX_EVENT_CHARS).into_owned()
}

/// Largest rejected event read into a tree to be shown by [`event`]: a tree costs many times
/// its text, so a larger event is shown by its size only (its id and reason are logged too).
pub(crate) const MAX_PARSED_EVENT_BYTES: usize = 16 * 1024;

/// A rejected event as received (raw JSON) as one bounded log field: as [`event`] when it is
/// at most [`MAX_PARSED_EVENT_BYTES`], otherwise its size.
pub(crate) fn raw_event(raw: &serde_json::value::RawValue) -> String {
    let text = raw.get();
    let small = (text.len() <= MAX_PARSED_EVENT_BYTES)
        .then(|| serde_json::from_str::<Value>(text).ok())
        .flatten();
    match small {
        Some(v) => event(&v),
        None => format!("({} bytes of JSON, not shown)", text.len()),
    }
}

/// A copy of `v` with URL queries redacted, built only as far as `budget` characters of
/// strings reach, so a huge event costs no more than the line that shows it.
fn redact_strings(v: &Value, budget: &mut usize) -> Value {
    if *budget == 0 {
        return Value::String("…".into());
    }
    match v {
        Value::String(s) => {
            let shown = clip(&url(s), *budget).into_owned();
            *budget = budget.saturating_sub(shown.len());
            Value::String(shown)
        }
        Value::Array(items) => {
            let mut shown = Vec::new();
            for item in items {
                if *budget == 0 {
                    break;
                }
                *budget = budget.saturating_sub(1);
                shown.push(redact_strings(item, budget));
            }
            Value::Array(shown)
        }
        Value::Object(map) => {
            let mut shown = serde_json::Map::new();
            for (key, item) in map {
                if *budget == 0 {
                    break;
                }
                let key = clip(key, MAX_ID_CHARS).into_owned();
                *budget = budget.saturating_sub(key.len());
                shown.insert(key, redact_strings(item, budget));
            }
            Value::Object(shown)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clip_keeps_short_text_and_says_how_much_was_cut() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcdef", 3), "abc…(+3 bytes)");
        assert_eq!(
            clip("ééé", 2),
            "éé…(+2 bytes)",
            "cuts on a character boundary"
        );
    }

    #[test]
    fn url_queries_are_redacted_except_the_api_version() {
        assert_eq!(
            url("https://rp-eastus.eventgrid.azure.net/eventsubscriptions/s/validate?id=1&t=2026-01-01&apiVersion=2018&token=vt-secret"),
            "https://rp-eastus.eventgrid.azure.net/eventsubscriptions/s/validate?id=***&t=***&apiVersion=***&token=***"
        );
        assert_eq!(
            url("https://x.asm.skype.com/v1/objects/0-eus/content/video?api-version=2023-03-06"),
            "https://x.asm.skype.com/v1/objects/0-eus/content/video?api-version=2023-03-06"
        );
        assert_eq!(url("not a url ?token=x"), "not a url ?token=x");
    }

    #[test]
    fn a_rejected_validation_event_shows_no_token_and_stays_bounded() {
        let raw = json!({
            "id": "e1",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {
                "validationUrl": "https://rp.eventgrid.azure.net/validate?id=1&token=vt-secret-1f2e3d",
                "padding": "x".repeat(1_000_000),
                "many": vec![1; 100_000],
            }
        });
        let shown = event(&raw);
        assert!(!shown.contains("vt-secret"), "{shown}");
        assert!(
            shown.chars().count() <= MAX_EVENT_CHARS + 32,
            "{}",
            shown.len()
        );
    }
}
