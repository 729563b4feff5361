//! `BLOB_NAME_TEMPLATE`: how archived blobs are named. Parsed (and refused, if wrong) at
//! start-up; rendered for each chunk by [`crate::recording`].

use std::fmt;

use super::ConfigError;

/// The setting's name.
pub const BLOB_NAME_TEMPLATE: &str = "BLOB_NAME_TEMPLATE";

/// The default: a folder per day and call, chunks in index order, the document id kept for
/// tracing back to ACS. E.g.
/// `2026/11/24/6c1f0e3a-8a44-4c2b-9b0e-5f6d7e8f9a0b/000-0-wus-d10-1111.mp4`.
pub(crate) const DEFAULT_BLOB_NAME_TEMPLATE: &str =
    "{year}/{month}/{day}/{callId}/{index}-{documentId}.{ext}";

/// One value a template can insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{year}`: four digits, from `recordingStartTime` (UTC).
    Year,
    /// `{month}`: two digits.
    Month,
    /// `{day}`: two digits.
    Day,
    /// `{time}`: `HHMMSS` of the recording start.
    Time,
    /// `{callId}`: the call id from the event subject, else the server call id, else the
    /// recording id, else `unknown-call`.
    CallId,
    /// `{serverCallId}` (or `unknown-server-call`).
    ServerCallId,
    /// `{recordingId}` (or `unknown-recording`).
    RecordingId,
    /// `{documentId}`: the chunk's document id (unique per chunk).
    DocumentId,
    /// `{index}`: the chunk index, three digits zero-padded.
    Index,
    /// `{ext}`: `mp4`, `mp3`, `wav`, or `bin` when the format is unknown.
    Ext,
}

impl Placeholder {
    const ALL: [(&'static str, Placeholder); 10] = [
        ("year", Placeholder::Year),
        ("month", Placeholder::Month),
        ("day", Placeholder::Day),
        ("time", Placeholder::Time),
        ("callId", Placeholder::CallId),
        ("serverCallId", Placeholder::ServerCallId),
        ("recordingId", Placeholder::RecordingId),
        ("documentId", Placeholder::DocumentId),
        ("index", Placeholder::Index),
        ("ext", Placeholder::Ext),
    ];
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Copied as is.
    Literal(String),
    /// Replaced per chunk.
    Value(Placeholder),
}

/// A parsed blob-name template.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobNameTemplate {
    source: String,
    parts: Vec<Part>,
}

impl fmt::Debug for BlobNameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl Default for BlobNameTemplate {
    fn default() -> Self {
        BlobNameTemplate::parse(DEFAULT_BLOB_NAME_TEMPLATE).expect("the default template parses")
    }
}

impl BlobNameTemplate {
    /// Parses a template. It must contain `{documentId}` (so that two chunks can never share a
    /// name) and may not start with `/` or contain `..` or `//`.
    pub fn parse(template: &str) -> Result<BlobNameTemplate, ConfigError> {
        let bad = |reason: String| ConfigError::malformed(BLOB_NAME_TEMPLATE, reason);
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad(format!("unclosed `{{` in `{template}`")))?
                + open;
            let name = &rest[open + 1..close];
            let placeholder = Placeholder::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    let known: Vec<_> = Placeholder::ALL
                        .iter()
                        .map(|(n, _)| format!("{{{n}}}"))
                        .collect();
                    bad(format!(
                        "unknown placeholder `{{{name}}}`; known: {}",
                        known.join(" ")
                    ))
                })?;
            parts.push(Part::Value(placeholder));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        for part in &parts {
            if let Part::Literal(l) = part {
                if l.contains('}') {
                    return Err(bad(format!("stray `}}` in `{template}`")));
                }
                if !l
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=".contains(&b))
                {
                    return Err(bad(format!(
                        "literal text `{l}` may hold only letters, digits and - _ . / ="
                    )));
                }
            }
        }
        if !parts.contains(&Part::Value(Placeholder::DocumentId)) {
            return Err(bad(
                "must contain {documentId}, so that no two chunks share a blob".into(),
            ));
        }
        if template.starts_with('/')
            || template.contains("//")
            || template.contains("..")
            || template.ends_with('/')
        {
            return Err(bad(format!(
                "`{template}` must not start or end with `/`, or contain `//` or `..`"
            )));
        }
        Ok(BlobNameTemplate {
            source: template.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_parses_into_parts() {
        let t = BlobNameTemplate::default();
        assert_eq!(t.parts()[0], Part::Value(Placeholder::Year));
        assert_eq!(t.parts()[1], Part::Literal("/".into()));
        assert_eq!(t.parts().last(), Some(&Part::Value(Placeholder::Ext)));
    }

    #[test]
    fn bad_templates_are_refused_naming_the_setting() {
        for t in [
            "{year}/{index}.{ext}",
            "{documentId",
            "{documentId}/{nope}",
            "/{documentId}",
            "a//{documentId}",
            "a/../{documentId}",
            "a b/{documentId}",
            "{documentId}}",
        ] {
            let err = BlobNameTemplate::parse(t).unwrap_err().to_string();
            assert!(err.contains(BLOB_NAME_TEMPLATE), "{t}: {err}");
        }
    }
}
