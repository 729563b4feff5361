//! The SSRF guard: which URLs may receive a request signed with the ACS key.
//!
//! URLs come from events, and every request to them carries a signature made with the resource's
//! key (or a bearer token), so an attacker who can post an event must not be able to point us at
//! an arbitrary host. The allowed suffixes are the .NET SDK's (`Downloader/Constants.cs`,
//! azure-protocols.md §1.5); the ACS endpoint itself serves the 2021 preview URL shape. Extra
//! hosts, and plain `http` on loopback, come only from `ACS_EXTRA_ALLOWED_HOSTS`, which exists
//! for local emulators. Pure: checked before anything is signed or sent.

use url::{Host, Url};

use crate::config::acs::is_loopback;
use crate::config::AllowedHost;

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
}

/// Checks `url` against the built-in suffixes, the ACS endpoint and `extra` hosts.
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
}
