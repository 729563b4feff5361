//! Reading untrusted JSON at a cost proportional to its size. Pure.
//!
//! A `serde_json::Value` tree costs far more than the text it came from (an empty-looking
//! `{"a":1}` of 7 bytes becomes a B-tree node of about 600 bytes), so a 2 MiB body of tiny
//! objects would take over 150 MB. Deliveries, events, chunks and job messages are therefore
//! read as borrowed [`RawValue`] slices of the body and typed structs of borrowed slices:
//! fields nobody reads are skipped without allocating, arrays are counted against a cap while
//! they are read, and strings are borrowed unless they hold escapes.

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// What kind of JSON value `raw` is, for messages ("found a number").
pub fn kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Whether `raw` is an object.
pub(crate) fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// A JSON string, borrowed from the input when it holds no escapes.
#[derive(serde::Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A string field: `Ok(None)` when absent or null, `Err(())` when it is not a string.
#[allow(clippy::result_unit_err)]
pub fn string(raw: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, ()> {
    let Some(raw) = raw.filter(|r| r.get().trim() != "null") else {
        return Ok(None);
    };
    serde_json::from_str::<Text<'_>>(raw.get())
        .map(|t| Some(t.0))
        .map_err(|_| ())
}

/// A string field trimmed, `None` when absent, null, blank or not a string.
pub fn text(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    match string(raw).ok()?? {
        Cow::Borrowed(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(Cow::Borrowed),
        Cow::Owned(s) => Some(s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string().into()),
    }
}

/// A non-negative integer field, `None` when absent or anything else.
pub(crate) fn unsigned(raw: Option<&RawValue>) -> Option<u64> {
    serde_json::from_str(raw?.get()).ok()
}

/// Reads `raw` as the typed struct `T` (whose fields borrow from it). The error says why,
/// for a JSON object that is not one (`must be an object`) or repeats a field.
pub fn object<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, String> {
    if !is_object(raw) {
        return Err(format!("must be an object, found {}", kind(raw)));
    }
    serde_json::from_str(raw.get()).map_err(|e| e.to_string())
}

/// Why [`array()`] refused a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayError {
    /// Not an array; says what it is.
    NotArray(&'static str),
    /// More items than allowed; reading stopped at the first one over.
    TooLong {
        /// The cap.
        max: usize,
    },
}

/// The items of a JSON array, borrowed, refused as soon as it holds more than `max`: the
/// cost of reading is bounded by the cap, not by what was sent.
pub fn array(raw: &RawValue, max: usize) -> Result<Vec<&RawValue>, ArrayError> {
    if !raw.get().trim_start().starts_with('[') {
        return Err(ArrayError::NotArray(kind(raw)));
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    // `raw` is valid JSON, so the only error the capped read can meet is the cap.
    de.deserialize_seq(Capped(max))
        .map_err(|_| ArrayError::TooLong { max })
}

struct Capped(usize);

impl<'de> Visitor<'de> for Capped {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array of at most {} items", self.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.0 {
                return Err(de::Error::custom("too many items"));
            }
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn strings_are_borrowed_unless_escaped_and_other_kinds_refused() {
        assert!(matches!(
            string(Some(raw(r#""plain""#))),
            Ok(Some(Cow::Borrowed("plain")))
        ));
        assert_eq!(
            string(Some(raw(r#""a\nb""#))).unwrap().as_deref(),
            Some("a\nb")
        );
        assert_eq!(string(Some(raw("null"))), Ok(None));
        assert_eq!(string(None), Ok(None));
        assert_eq!(string(Some(raw("7"))), Err(()));
        assert_eq!(text(Some(raw(r#""  x ""#))).as_deref(), Some("x"));
        assert_eq!(text(Some(raw(r#""   ""#))), None);
        assert_eq!(text(Some(raw("[]"))), None);
    }

    #[test]
    fn arrays_are_capped_while_read() {
        assert_eq!(array(raw("[1, {}, \"x\"]"), 3).unwrap().len(), 3);
        assert_eq!(
            array(raw("[1, 2, 3, 4]"), 3).unwrap_err(),
            ArrayError::TooLong { max: 3 }
        );
        assert_eq!(
            array(raw("{}"), 3).unwrap_err(),
            ArrayError::NotArray("an object")
        );
        assert_eq!(array(raw(" []"), 3).unwrap().len(), 0);
    }

    #[test]
    fn unsigned_reads_only_non_negative_integers() {
        assert_eq!(unsigned(Some(raw("12"))), Some(12));
        assert_eq!(unsigned(Some(raw("-1"))), None);
        assert_eq!(unsigned(Some(raw("1.5"))), None);
        assert_eq!(unsigned(Some(raw("\"1\""))), None);
    }
}
