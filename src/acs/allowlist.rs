//! The SSRF guard: which URLs may receive a request signed with the ACS key, and which
//! recording object each one addresses.
//!
//! URLs come from events, and every request to them carries a signature made with the resource's
//! key (or a bearer token), so an attacker who can post an event must not be able to point us at
//! an arbitrary host, nor at another API of an allowed one: the ACS endpoint also serves the
//! Identity, SMS and phone-number APIs, and the key signs for all of them. So a URL passes only
//! when its host is allowed ([`check_url`]) *and* its path has a recording shape
//! ([`recording_object`]):
//!
//! | where | GET (media, metadata) | DELETE |
//! |---|---|---|
//! | a recording storage host | `/v1/objects/{objectId}/content/{kind}` | `/v1/objects/{objectId}`, or `.../content/deletedata` as Microsoft's REST spec example writes it |
//! | the ACS endpoint (2021 preview) | `/recording/download/{documentId}[/metadata]`, query `api-version` only | never |
//!
//! The allowed suffixes are the .NET SDK's (`Downloader/Constants.cs`, `docs/protocols.md` §2.1).
//! Extra hosts, and plain `http` on loopback, come only from `ACS_EXTRA_ALLOWED_HOSTS`, which
//! exists for local emulators; the shapes hold there too. [`UrlPolicy::check_delete`] also ties
//! a `deleteLocation` to the object the chunk was archived from. Pure: checked before anything
//! is signed or sent.

use url::{Host, Url};

use crate::config::acs::is_loopback;
use crate::config::AllowedHost;
use crate::recording::{is_safe_document_id, ChunkSource};

use super::{chunk_urls, sign, ChunkUrls};

/// Host suffixes of the ACS recording storage (public cloud, Teams interop, US government).
pub const ALLOWED_HOST_SUFFIXES: [&str; 3] = [
    ".asm.skype.com",
    ".asyncgw.teams.microsoft.com",
    ".ams.gov.teams.microsoft.us",
];

/// Why a URL may not be fetched. Always permanent: the same URL is refused every time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No host at all (`data:`, `file:` ...).
    #[error("the URL has no host")]
    NoHost,
    /// Not `https` (plain `http` only for a loopback host in `ACS_EXTRA_ALLOWED_HOSTS`).
    #[error("scheme `{0}` is not allowed: only https (plain http only for a loopback host listed in ACS_EXTRA_ALLOWED_HOSTS)")]
    Scheme(String),
    /// `user:password@` in the URL.
    #[error("URLs with a user name or password are not allowed")]
    UserInfo,
    /// An IP address instead of a name, not listed in `ACS_EXTRA_ALLOWED_HOSTS`.
    #[error("IP address hosts are not allowed unless listed in ACS_EXTRA_ALLOWED_HOSTS")]
    IpLiteral,
    /// A name outside the ACS storage domains and the configured endpoint.
    #[error("host is not an ACS recording storage host ({}) nor the configured ACS endpoint", ALLOWED_HOST_SUFFIXES.join(", "))]
    NotAllowed,
    /// An allowed name on a port other than the scheme's default.
    #[error("port {0} is not allowed for this host")]
    Port(u16),
    /// An allowed host, but not a recording object (another API, or a malformed object id).
    #[error("`{path}` is not a recording object: expected {expected}")]
    NotARecording {
        /// The start of the path, for the log.
        path: String,
        /// The shapes this request may have there.
        expected: &'static str,
    },
    /// A query parameter other than `api-version` on the ACS endpoint.
    #[error("query parameter `{0}` is not allowed on the ACS endpoint (only api-version)")]
    Query(String),
    /// `deleteLocation` names another object than the one the chunk is downloaded from.
    #[error(
        "deleteLocation names {delete}, not {content}, the object the chunk is downloaded from"
    )]
    DeleteElsewhere {
        /// The object `contentLocation` (or the preview document id) names.
        content: Box<RecordingObject>,
        /// The object `deleteLocation` names.
        delete: Box<RecordingObject>,
    },
}

/// What a request does with a recording object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Download its media or metadata.
    Get,
    /// Free it in ACS.
    Delete,
}

/// One recording object: the authority that serves it (`host[:port]`, lower case, no default
/// port) and its id. Two URLs that yield equal objects address the same recording chunk; this is
/// what the archive records as a blob's source and what a DELETE must match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordingObject {
    /// `host[:port]`.
    pub host: String,
    /// The object id (GA) or document id (preview).
    pub id: String,
}

impl std::fmt::Display for RecordingObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.id)
    }
}

const GA_GET: &str = "GET /v1/objects/{objectId}/content/{kind}";
const GA_DELETE: &str = "DELETE /v1/objects/{objectId} (or .../content/deletedata)";
const PREVIEW_GET: &str = "GET /recording/download/{documentId}[/metadata] on the ACS endpoint";
const PREVIEW_DELETE: &str =
    "no DELETE on the ACS endpoint: recordings are deleted on their storage host";

/// The recording object `url` addresses for `access`, or why it addresses none. Only the
/// path (and, on the endpoint, the query) is judged here: [`check_url`] judges the host.
/// `endpoint` is the ACS resource, the one host where the preview shape is allowed.
pub fn recording_object(
    url: &Url,
    access: Access,
    endpoint: &Url,
) -> Result<RecordingObject, Refusal> {
    let on_endpoint = url.host().is_some() && sign::authority(url) == sign::authority(endpoint);
    let expected = match (on_endpoint, access) {
        (false, Access::Get) => GA_GET,
        (false, Access::Delete) => GA_DELETE,
        (true, Access::Get) => PREVIEW_GET,
        (true, Access::Delete) => PREVIEW_DELETE,
    };
    let refuse = || Refusal::NotARecording {
        path: url.path().chars().take(120).collect(),
        expected,
    };
    let segments: Vec<&str> = url.path_segments().ok_or_else(refuse)?.collect();
    let id = match (on_endpoint, access, segments.as_slice()) {
        (false, Access::Get, ["v1", "objects", id, "content", kind])
            if is_kind(kind) && *kind != "deletedata" =>
        {
            id
        }
        (false, Access::Delete, ["v1", "objects", id])
        | (false, Access::Delete, ["v1", "objects", id, "content", "deletedata"]) => id,
        (true, Access::Get, ["recording", "download", id])
        | (true, Access::Get, ["recording", "download", id, "metadata"]) => id,
        _ => return Err(refuse()),
    };
    if id.is_empty() || !is_safe_document_id(id) {
        return Err(refuse());
    }
    if on_endpoint {
        if let Some((name, _)) = url.query_pairs().find(|(k, _)| k != "api-version") {
            return Err(Refusal::Query(name.chars().take(40).collect()));
        }
    }
    Ok(RecordingObject {
        host: sign::authority(url),
        id: id.to_string(),
    })
}

/// A content kind such as `video`, `audio` or `acsmetadata`.
fn is_kind(kind: &str) -> bool {
    !kind.is_empty() && kind.len() <= 32 && kind.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Where signed requests may go: the ACS endpoint, the built-in storage suffixes and
/// `ACS_EXTRA_ALLOWED_HOSTS`, each only for recording objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPolicy {
    endpoint: Url,
    extra_hosts: Vec<AllowedHost>,
}

/// A chunk's URLs that passed every check, and the object they address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedChunk {
    /// The URLs to request.
    pub urls: ChunkUrls,
    /// The object the media comes from: the only one a DELETE may name.
    pub source: RecordingObject,
}

/// Why a chunk can never be fetched: which event field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} on {host} refused: {reason}")]
pub struct ChunkRefusal {
    /// `contentLocation`, `metadataLocation`, or `documentId` (preview events, whose URLs
    /// are built from it).
    pub field: &'static str,
    /// The refused URL's `host[:port]` (never the whole URL: it may carry a token).
    pub host: String,
    /// Why.
    pub reason: Refusal,
}

impl UrlPolicy {
    /// The policy for this ACS resource and these extra hosts.
    pub fn new(endpoint: Url, extra_hosts: Vec<AllowedHost>) -> Self {
        UrlPolicy {
            endpoint,
            extra_hosts,
        }
    }

    /// The ACS resource endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The hosts of `ACS_EXTRA_ALLOWED_HOSTS`.
    pub fn extra_hosts(&self) -> &[AllowedHost] {
        &self.extra_hosts
    }

    /// The object `url` addresses, if a request of kind `access` may be sent to it.
    pub fn check(&self, url: &Url, access: Access) -> Result<RecordingObject, Refusal> {
        check_url(url, &self.endpoint, &self.extra_hosts)?;
        recording_object(url, access, &self.endpoint)
    }

    /// Checks the URLs a chunk is fetched from. Its `deleteLocation` is judged apart, by
    /// [`UrlPolicy::check_delete`]: a bad one costs the delete, never the archive.
    pub fn check_chunk(
        &self,
        document_id: &str,
        source: &ChunkSource,
    ) -> Result<CheckedChunk, ChunkRefusal> {
        let (media_field, metadata_field) = match source {
            ChunkSource::Preview => ("documentId", "documentId"),
            ChunkSource::Located { .. } => ("contentLocation", "metadataLocation"),
        };
        let urls = chunk_urls(&self.endpoint, document_id, source);
        let refused = |field, url: &Url| {
            let host = sign::authority(url);
            move |reason| ChunkRefusal {
                field,
                host,
                reason,
            }
        };
        let object = self
            .check(&urls.media, Access::Get)
            .map_err(refused(media_field, &urls.media))?;
        if let Some(metadata) = &urls.metadata {
            self.check(metadata, Access::Get)
                .map_err(refused(metadata_field, metadata))?;
        }
        Ok(CheckedChunk {
            urls,
            source: object,
        })
    }

    /// Whether `delete` may be sent to free `archived`, the object a chunk was archived from:
    /// a DELETE on an allowed host, of that very object.
    pub fn check_delete(
        &self,
        delete: &Url,
        archived: &RecordingObject,
    ) -> Result<RecordingObject, Refusal> {
        let freed = self.check(delete, Access::Delete)?;
        if &freed != archived {
            return Err(Refusal::DeleteElsewhere {
                content: Box::new(archived.clone()),
                delete: Box::new(freed),
            });
        }
        Ok(freed)
    }
}

/// Checks the host of `url` against the built-in suffixes, the ACS endpoint and `extra` hosts
/// (the path is [`recording_object`]'s job).
pub fn check_url(url: &Url, acs_endpoint: &Url, extra: &[AllowedHost]) -> Result<(), Refusal> {
    let host = url.host().ok_or(Refusal::NoHost)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::UserInfo);
    }
    let scheme = url.scheme();
    if !matches!(scheme, "https" | "http") {
        return Err(Refusal::Scheme(scheme.to_string()));
    }
    let port = url.port_or_known_default();
    let host_text = host_text(&host);

    if extra
        .iter()
        .any(|e| e.host == host_text && e.port.is_none_or(|p| Some(p) == port))
    {
        return match scheme {
            "https" => Ok(()),
            _ if is_loopback(&host) => Ok(()),
            _ => Err(Refusal::Scheme(scheme.to_string())),
        };
    }
    if scheme != "https" {
        return Err(Refusal::Scheme(scheme.to_string()));
    }
    let Host::Domain(name) = host else {
        return Err(Refusal::IpLiteral);
    };
    let is_endpoint = acs_endpoint.host_str() == Some(name)
        && acs_endpoint.scheme() == "https"
        && acs_endpoint.port_or_known_default() == port;
    if is_endpoint {
        return Ok(());
    }
    if !ALLOWED_HOST_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Err(Refusal::NotAllowed);
    }
    match url.port() {
        None => Ok(()),
        Some(p) => Err(Refusal::Port(p)),
    }
}

/// The host as `ACS_EXTRA_ALLOWED_HOSTS` writes it: lower-case name, dotted IPv4, bare IPv6.
fn host_text(host: &Host<&str>) -> String {
    match host {
        Host::Domain(d) => d.to_ascii_lowercase(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Url {
        Url::parse("https://contoso.communication.azure.com/").unwrap()
    }

    fn check(url: &str, extra: &[AllowedHost]) -> Result<(), Refusal> {
        check_url(&Url::parse(url).unwrap(), &endpoint(), extra)
    }

    fn extra(host: &str, port: Option<u16>) -> AllowedHost {
        AllowedHost {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn acs_storage_hosts_and_the_endpoint_are_allowed() {
        for url in [
            "https://storage.asm.skype.com/v1/objects/d/content/video",
            "https://us-storage.asm.skype.com/v1/objects/d/content/acsmetadata",
            "https://x.asyncgw.teams.microsoft.com/v1/objects/d/content/audio",
            "https://x.ams.gov.teams.microsoft.us/v1/objects/d/content/audio",
            "https://STORAGE.ASM.SKYPE.COM:443/v1/objects/d/content/video",
            "https://contoso.communication.azure.com/recording/download/d?api-version=2021-04-15-preview1",
        ] {
            assert_eq!(check(url, &[]), Ok(()), "{url}");
        }
    }

    #[test]
    fn every_bad_form_is_refused() {
        for (url, refusal) in [
            (
                "http://storage.asm.skype.com/v1/objects/d",
                Refusal::Scheme("http".into()),
            ),
            (
                "ftp://storage.asm.skype.com/x",
                Refusal::Scheme("ftp".into()),
            ),
            ("https://user:pw@storage.asm.skype.com/x", Refusal::UserInfo),
            ("https://user@storage.asm.skype.com/x", Refusal::UserInfo),
            ("https://evilasm.skype.com/x", Refusal::NotAllowed),
            ("https://asm.skype.com/x", Refusal::NotAllowed),
            (
                "https://storage.asm.skype.com.evil.example/x",
                Refusal::NotAllowed,
            ),
            ("https://storage.asm.skype.com./x", Refusal::NotAllowed),
            ("https://169.254.169.254/metadata", Refusal::IpLiteral),
            ("https://[::1]/x", Refusal::IpLiteral),
            ("https://127.0.0.1/x", Refusal::IpLiteral),
            ("https://storage.asm.skype.com:8443/x", Refusal::Port(8443)),
            (
                "https://contoso.communication.azure.com:8443/x",
                Refusal::NotAllowed,
            ),
            (
                "http://contoso.communication.azure.com/x",
                Refusal::Scheme("http".into()),
            ),
            ("http://127.0.0.1:8080/x", Refusal::Scheme("http".into())),
            ("data:text/plain,hello", Refusal::NoHost),
        ] {
            assert_eq!(check(url, &[]), Err(refusal), "{url}");
        }
    }

    #[test]
    fn extra_hosts_open_loopback_http_and_named_ports_only() {
        let list = [
            extra("127.0.0.1", Some(7002)),
            extra("emulator.test", None),
            extra("localhost", None),
        ];
        assert_eq!(
            check("http://127.0.0.1:7002/v1/objects/d/content/video", &list),
            Ok(())
        );
        assert_eq!(
            check("http://127.0.0.1:7003/x", &list),
            Err(Refusal::Scheme("http".into()))
        );
        assert_eq!(check("https://emulator.test:9999/x", &list), Ok(()));
        assert_eq!(check("http://localhost:1234/x", &list), Ok(()));
        // Listed but not loopback: https only.
        assert_eq!(
            check("http://emulator.test/x", &list),
            Err(Refusal::Scheme("http".into()))
        );
        // Userinfo is refused even on a listed host.
        assert_eq!(
            check("http://u:p@127.0.0.1:7002/x", &list),
            Err(Refusal::UserInfo)
        );
    }

    #[test]
    fn an_http_loopback_endpoint_needs_listing_too() {
        let endpoint = Url::parse("http://127.0.0.1:7001/").unwrap();
        let url = Url::parse(
            "http://127.0.0.1:7001/recording/download/d?api-version=2021-04-15-preview1",
        )
        .unwrap();
        assert_eq!(
            check_url(&url, &endpoint, &[]),
            Err(Refusal::Scheme("http".into()))
        );
        assert_eq!(
            check_url(&url, &endpoint, &[extra("127.0.0.1", Some(7001))]),
            Ok(())
        );
    }

    fn policy() -> UrlPolicy {
        UrlPolicy::new(endpoint(), vec![extra("127.0.0.1", Some(7002))])
    }

    fn object(host: &str, id: &str) -> RecordingObject {
        RecordingObject {
            host: host.into(),
            id: id.into(),
        }
    }

    #[test]
    fn recording_shapes_are_accepted_and_name_their_object() {
        let storage = "storage.asm.skype.com";
        for (url, access, expected) in [
            (
                "https://storage.asm.skype.com/v1/objects/0-eus-d12-801b/content/video",
                Access::Get,
                object(storage, "0-eus-d12-801b"),
            ),
            (
                "https://storage.asm.skype.com/v1/objects/doc/content/acsmetadata",
                Access::Get,
                object(storage, "doc"),
            ),
            (
                "https://storage.asm.skype.com/v1/objects/doc",
                Access::Delete,
                object(storage, "doc"),
            ),
            (
                "https://storage.asm.skype.com/v1/objects/doc/content/deletedata",
                Access::Delete,
                object(storage, "doc"),
            ),
            (
                "https://contoso.communication.azure.com/recording/download/doc?api-version=2021-04-15-preview1",
                Access::Get,
                object("contoso.communication.azure.com", "doc"),
            ),
            (
                "https://contoso.communication.azure.com/recording/download/doc/metadata?api-version=2021-04-15-preview1",
                Access::Get,
                object("contoso.communication.azure.com", "doc"),
            ),
            (
                "http://127.0.0.1:7002/v1/objects/doc/content/audio",
                Access::Get,
                object("127.0.0.1:7002", "doc"),
            ),
        ] {
            assert_eq!(policy().check(&Url::parse(url).unwrap(), access), Ok(expected), "{url}");
        }
    }

    #[test]
    fn other_apis_on_allowed_hosts_are_refused() {
        for (url, access) in [
            // The reported attack: other ACS APIs, signed with the resource key.
            ("https://contoso.communication.azure.com/phoneNumbers?api-version=2022-12-01", Access::Get),
            ("https://contoso.communication.azure.com/identities/8:acs:victim?api-version=2023-10-01", Access::Delete),
            ("https://contoso.communication.azure.com/recording/download/doc", Access::Delete),
            // GA shapes belong to storage hosts, preview shapes to the endpoint.
            ("https://contoso.communication.azure.com/v1/objects/doc/content/video", Access::Get),
            ("https://storage.asm.skype.com/recording/download/doc", Access::Get),
            ("https://storage.asm.skype.com/v1/objects/doc/content/video", Access::Delete),
            ("https://storage.asm.skype.com/v1/objects/doc", Access::Get),
            ("https://storage.asm.skype.com/v1/objects/doc/content/deletedata", Access::Get),
            ("https://storage.asm.skype.com/v1/objects/doc/content/video/", Access::Get),
            ("https://storage.asm.skype.com/v1/objects//content/video", Access::Get),
            ("https://storage.asm.skype.com/v1/objects/a%2Fb/content/video", Access::Get),
            ("https://storage.asm.skype.com/v1/objects/.hidden/content/video", Access::Get),
            ("https://storage.asm.skype.com/v2/objects/doc/content/video", Access::Get),
            ("https://storage.asm.skype.com/v1/objects/doc/content/video/../../../../identities", Access::Get),
            ("https://storage.asm.skype.com/", Access::Delete),
            // Emulator hosts get the same shapes.
            ("http://127.0.0.1:7002/identities/x", Access::Delete),
        ] {
            let err = policy().check(&Url::parse(url).unwrap(), access).unwrap_err();
            assert!(matches!(err, Refusal::NotARecording { .. }), "{url}: {err}");
        }
        assert_eq!(
            policy().check(
                &Url::parse("https://contoso.communication.azure.com/recording/download/doc?api-version=1&x=identities").unwrap(),
                Access::Get
            ),
            Err(Refusal::Query("x".into()))
        );
    }

    fn located(content: &str, metadata: Option<&str>, delete: Option<&str>) -> ChunkSource {
        let u = |s: &str| Url::parse(s).unwrap();
        ChunkSource::Located {
            content: u(content),
            metadata: metadata.map(u),
            delete: delete.map(u),
        }
    }

    #[test]
    fn a_delete_location_must_name_the_archived_object() {
        let u = |s: &str| Url::parse(s).unwrap();
        let ga = |id: &str, kind: &str| {
            u(&format!(
                "https://storage.asm.skype.com/v1/objects/{id}/content/{kind}"
            ))
        };
        let ok = policy()
            .check_chunk(
                "d",
                &located(
                    ga("a", "video").as_str(),
                    Some(ga("a", "acsmetadata").as_str()),
                    Some("https://contoso.communication.azure.com/identities/x"),
                ),
            )
            .unwrap();
        let archived = object("storage.asm.skype.com", "a");
        assert_eq!(
            ok.source, archived,
            "a bad deleteLocation costs only the delete"
        );
        for delete in [
            ga("a", "deletedata"),
            u("https://storage.asm.skype.com/v1/objects/a"),
        ] {
            assert_eq!(
                policy().check_delete(&delete, &archived),
                Ok(archived.clone())
            );
        }
        for delete in [
            ga("b", "deletedata"),
            u("https://us-storage.asm.skype.com/v1/objects/a/content/deletedata"),
        ] {
            let err = policy().check_delete(&delete, &archived).unwrap_err();
            assert!(matches!(err, Refusal::DeleteElsewhere { .. }), "{err}");
        }
        let identity = u("https://contoso.communication.azure.com/identities/8:acs:victim?api-version=2023-10-01");
        assert!(matches!(
            policy().check_delete(&identity, &archived),
            Err(Refusal::NotARecording { .. })
        ));
        let err = policy()
            .check_chunk(
                "d",
                &located(
                    "https://contoso.communication.azure.com/phoneNumbers",
                    None,
                    None,
                ),
            )
            .unwrap_err();
        assert_eq!(err.field, "contentLocation");
        let err = policy().check_chunk("", &ChunkSource::Preview).unwrap_err();
        assert_eq!(err.field, "documentId");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("v1".to_string()),
                Just("objects".to_string()),
                Just("content".to_string()),
                Just("recording".to_string()),
                Just("download".to_string()),
                Just("metadata".to_string()),
                Just("deletedata".to_string()),
                Just("video".to_string()),
                Just("identities".to_string()),
                Just("..".to_string()),
                Just(String::new()),
                "[a-zA-Z0-9._%:~-]{1,12}",
            ]
        }

        fn url_text() -> impl Strategy<Value = String> {
            let scheme = prop_oneof![Just("https"), Just("http"), Just("ftp")];
            let host = prop_oneof![
                Just("storage.asm.skype.com"),
                Just("us-storage.asm.skype.com"),
                Just("contoso.communication.azure.com"),
                Just("contoso.communication.azure.com:8443"),
                Just("127.0.0.1:7002"),
                Just("169.254.169.254"),
                Just("evil.example"),
            ];
            let query = prop_oneof![
                Just(""),
                Just("?api-version=2021-04-15-preview1"),
                Just("?api-version=x&comp=list"),
            ];
            // Near-misses of the recording shapes, and anything at all.
            let path = prop_oneof![
                (segment(), segment()).prop_map(|(id, kind)| vec![
                    "v1".into(),
                    "objects".into(),
                    id,
                    "content".into(),
                    kind
                ]),
                segment().prop_map(|id| vec!["v1".into(), "objects".into(), id]),
                (segment(), prop::option::of(segment())).prop_map(|(id, tail)| {
                    let mut p = vec!["recording".into(), "download".into(), id];
                    p.extend(tail);
                    p
                }),
                prop::collection::vec(segment(), 0..7),
            ];
            (scheme, host, path, query)
                .prop_map(|(s, h, p, q)| format!("{s}://{h}/{}{q}", p.join("/")))
        }

        /// Whether the raw path is one of the shapes allowed for `access` on this host.
        fn is_recording_shape(url: &Url, access: Access) -> bool {
            let on_endpoint =
                url.host_str() == Some("contoso.communication.azure.com") && url.port().is_none();
            let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
            let id_ok = |id: &str| {
                !id.is_empty()
                    && !id.starts_with('.')
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            };
            match (on_endpoint, access, segments.as_slice()) {
                (false, Access::Get, ["v1", "objects", id, "content", kind]) => {
                    id_ok(id) && *kind != "deletedata"
                }
                (false, Access::Delete, ["v1", "objects", id])
                | (false, Access::Delete, ["v1", "objects", id, "content", "deletedata"]) => {
                    id_ok(id)
                }
                (true, Access::Get, ["recording", "download", id])
                | (true, Access::Get, ["recording", "download", id, "metadata"]) => id_ok(id),
                _ => false,
            }
        }

        proptest! {
            #[test]
            fn any_text_is_judged_without_panicking(text in any::<String>()) {
                if let Ok(url) = Url::parse(&text) {
                    for access in [Access::Get, Access::Delete] {
                        if policy().check(&url, access).is_ok() {
                            prop_assert!(is_recording_shape(&url, access), "{text}");
                        }
                    }
                }
            }

            #[test]
            fn only_recording_shapes_on_allowed_hosts_pass(text in url_text()) {
                let url = Url::parse(&text).unwrap();
                for access in [Access::Get, Access::Delete] {
                    if let Ok(found) = policy().check(&url, access) {
                        prop_assert!(is_recording_shape(&url, access), "{text}");
                        prop_assert!(check_url(&url, &endpoint(), policy().extra_hosts()).is_ok());
                        prop_assert_eq!(&found.host, &sign::authority(&url));
                        let segments: Vec<&str> = url.path_segments().unwrap().collect();
                        prop_assert_eq!(found.id.as_str(), segments[2]);
                    }
                }
            }

            #[test]
            fn a_delete_passes_only_for_the_object_archived(
                content in url_text(),
                delete in url_text(),
            ) {
                let policy = policy();
                let content_url = Url::parse(&content).unwrap();
                let delete_url = Url::parse(&delete).unwrap();
                let Ok(checked) = policy.check_chunk("doc", &located(&content, None, Some(&delete))) else {
                    return Ok(());
                };
                prop_assert_eq!(&Ok(checked.source.clone()), &policy.check(&content_url, Access::Get));
                match policy.check_delete(&delete_url, &checked.source) {
                    Ok(freed) => {
                        prop_assert_eq!(&freed, &checked.source);
                        prop_assert!(is_recording_shape(&delete_url, Access::Delete), "{delete}");
                    }
                    Err(_) => prop_assert!(
                        policy.check(&delete_url, Access::Delete) != Ok(checked.source)
                    ),
                }
            }
        }
    }
}
