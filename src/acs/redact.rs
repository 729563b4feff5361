//! Error-body snippets that are safe to log: short, on one line, secrets removed.

/// Longest snippet kept from an error body, in characters.
pub(crate) const SNIPPET_CHARS: usize = 300;

/// Markers after which a value is a credential, matched case-insensitively.
const MARKERS: [&str; 7] = [
    "signature=",
    "sig=",
    "accesskey=",
    "access_token",
    "bearer ",
    "authorization",
    "x-identity-header",
];

/// The first [`SNIPPET_CHARS`] characters of `body` on one line, with credential-looking
/// values and every string in `secrets` replaced by `***`.
pub(crate) fn snippet(body: &[u8], secrets: &[&str]) -> String {
    // Read a little more than is kept, so a secret straddling the cut is still recognised.
    let text = String::from_utf8_lossy(&body[..body.len().min(SNIPPET_CHARS * 4)]);
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret, "***");
    }
    let text = redact_markers(&text);
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn redact_markers(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hit = MARKERS.iter().find(|m| lower[i..].starts_with(*m));
        let Some(marker) = hit else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        };
        let mut j = i + marker.len();
        out.push_str(&text[i..j]);
        // Separators between the marker and its value: `":"`, `: `, `=`.
        while j < text.len() && matches!(text.as_bytes()[j], b'"' | b':' | b'=' | b' ' | b'\'') {
            out.push(text.as_bytes()[j] as char);
            j += 1;
        }
        // An `Authorization` value has spaces (`Bearer <token>`), so it runs to the next quote
        // or tag; other values end at the next separator.
        let spaced = *marker == "authorization";
        let end = text[j..]
            .find(|c: char| {
                matches!(c, '"' | '\'' | '<' | ',' | '}')
                    || (!spaced && matches!(c, '&' | ';' | ' '))
            })
            .map_or(text.len(), |n| j + n);
        if end > j {
            out.push_str("***");
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_and_text_is_kept() {
        let body = br#"<html><body><h1>Bad Request</h1>
            <p>Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host&Signature=abc+/=</p>
            {"access_token":"eyJ0eXAi","sig":"x"} https://h/p?sig=s3cr3t&se=1 key c2VjcmV0a2V5</body></html>"#;
        let s = snippet(body, &["c2VjcmV0a2V5"]);
        assert!(s.starts_with("<html><body><h1>Bad Request</h1> <p>"), "{s}");
        for leak in ["abc+/=", "eyJ0eXAi", "s3cr3t", "c2VjcmV0a2V5"] {
            assert!(!s.contains(leak), "{leak} leaked: {s}");
        }
        assert!(s.contains("Authorization: ***</p>"), "{s}");
        assert!(s.contains("?sig=***&se=1"), "{s}");
        assert_eq!(snippet(b"x&Signature=abc+/= y", &[]), "x&Signature=*** y");
        assert!(s.contains("&se=1"), "{s}");

        let s = snippet(b"{\"headers\": \"Authorization: Bearer eyJ0eXAi\"}", &[]);
        assert!(!s.contains("eyJ0eXAi"), "{s}");
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(1000);
        let s = snippet(body.as_bytes(), &[]);
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 3);
        assert!(s.ends_with("..."));
    }
}
