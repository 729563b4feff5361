//! Settings of the front ends: how long the Functions handler's HTTP server waits for a slow or
//! idle client and how many connections it holds, and the keys the Lambda front end requires.

use std::time::Duration;

use super::{parse_flag, parse_opt, ConfigError, Lookup, Secret};

/// Seconds a connection may take, once ready for a request, to send the whole request head.
pub const HTTP_HEADER_TIMEOUT_SECS: &str = "HTTP_HEADER_TIMEOUT_SECS";
/// Seconds a request may take to send its whole body.
pub const HTTP_BODY_TIMEOUT_SECS: &str = "HTTP_BODY_TIMEOUT_SECS";
/// Connections served at once.
pub const HTTP_MAX_CONNECTIONS: &str = "HTTP_MAX_CONNECTIONS";
/// The Lambda front end's keys: one, or two comma-separated while rotating.
pub const WEBHOOK_KEYS: &str = "WEBHOOK_KEYS";
/// `true` lets the Lambda front end run without `WEBHOOK_KEYS`.
pub const WEBHOOK_ALLOW_ANONYMOUS: &str = "WEBHOOK_ALLOW_ANONYMOUS";

/// Shortest key accepted: a guessable key is no key (Functions' own keys are 56 characters).
pub(crate) const MIN_KEY_CHARS: usize = 16;

/// What the handler's HTTP server grants one client. The handler listens on loopback for the
/// Functions host, but every byte it reads came from the network, so a client that stalls must
/// not keep a connection, or the memory of a half-sent body, for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// `HTTP_HEADER_TIMEOUT_SECS`: from the moment a connection can send a request (just
    /// accepted, or done with the previous one) until its head is complete; the connection is
    /// closed after it. It bounds slow headers and idle keep-alive connections alike (hyper
    /// runs one timer for both). Default 30 s, hyper's own default.
    pub(crate) header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_SECS`: from the head until the whole body is read; after it the
    /// request is answered 408 and the connection closed. Default 30 s: Event Grid stops
    /// waiting for an answer after 30 s anyway, and the host forwards over loopback.
    pub(crate) body_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: connections served at once; more wait in the listen backlog
    /// until one closes. Each holds at most one body (`WEBHOOK_MAX_BODY_BYTES`) plus read
    /// buffers, so memory held by stalled clients is bounded by this, whatever their number
    /// (measured: about 3.6 MB each with 2 MiB bodies). The host runs at most
    /// 6 queue invocations at once (host.json) next to Event Grid's deliveries.
    pub(crate) max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

pub(crate) fn load_server_limits(lookup: &impl Lookup) -> Result<ServerLimits, ConfigError> {
    let d = ServerLimits::default();
    let seconds = |name: &str, default: Duration| {
        parse_opt(lookup, name, "a number of seconds from 1 to 3600", |v| {
            v.parse::<u64>().ok().filter(|n| (1..=3600).contains(n))
        })
        .map(|v| v.map_or(default, Duration::from_secs))
    };
    Ok(ServerLimits {
        header_timeout: seconds(HTTP_HEADER_TIMEOUT_SECS, d.header_timeout)?,
        body_timeout: seconds(HTTP_BODY_TIMEOUT_SECS, d.body_timeout)?,
        max_connections: parse_opt(
            lookup,
            HTTP_MAX_CONNECTIONS,
            "a number from 1 to 10000",
            |v| v.parse::<usize>().ok().filter(|n| (1..=10_000).contains(n)),
        )?
        .unwrap_or(d.max_connections),
    })
}

/// Who may call the Lambda front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    /// Callers must present one of these keys (two while rotating).
    Keys(Vec<Secret<String>>),
    /// Anyone: `WEBHOOK_ALLOW_ANONYMOUS=true` without keys, for a front end that authenticates
    /// callers itself (an API Gateway authorizer).
    Anonymous,
}

/// `WEBHOOK_KEYS` as given (checked when present), and `WEBHOOK_ALLOW_ANONYMOUS`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookKeys {
    /// The keys; empty when unset.
    pub keys: Vec<Secret<String>>,
    /// `WEBHOOK_ALLOW_ANONYMOUS`.
    pub(crate) allow_anonymous: bool,
}

impl WebhookKeys {
    /// What the Lambda front end requires of callers, or an error when neither keys nor an
    /// explicit opt-out are set: a front end reachable from the internet must not start open
    /// by accident.
    pub fn require(&self) -> Result<WebhookAuth, ConfigError> {
        match (self.keys.is_empty(), self.allow_anonymous) {
            (false, _) => Ok(WebhookAuth::Keys(self.keys.clone())),
            (true, true) => Ok(WebhookAuth::Anonymous),
            (true, false) => Err(ConfigError::missing(
                WEBHOOK_KEYS,
                format!("the Lambda front end answers anyone without it; set one key of at least {MIN_KEY_CHARS} characters (two, comma-separated, while rotating), or {WEBHOOK_ALLOW_ANONYMOUS}=true when something in front of it authenticates callers"),
            )),
        }
    }
}

pub(crate) fn load_webhook_keys(lookup: &impl Lookup) -> Result<WebhookKeys, ConfigError> {
    let keys: Vec<String> = lookup
        .get(WEBHOOK_KEYS)
        .map(|raw| raw.split(',').map(|k| k.trim().to_string()).collect())
        .unwrap_or_default();
    if keys.len() > 2 {
        return Err(ConfigError::malformed(
            WEBHOOK_KEYS,
            format!(
                "expected one key, or two while rotating; got {}",
                keys.len()
            ),
        ));
    }
    if let Some(i) = keys.iter().position(|k| k.chars().count() < MIN_KEY_CHARS) {
        // Only the position: the value is a secret.
        return Err(ConfigError::malformed(
            WEBHOOK_KEYS,
            format!("key {} is shorter than {MIN_KEY_CHARS} characters", i + 1),
        ));
    }
    Ok(WebhookKeys {
        keys: keys.into_iter().map(Secret::new).collect(),
        allow_anonymous: parse_flag(lookup, WEBHOOK_ALLOW_ANONYMOUS, false)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::lookup;

    #[test]
    fn server_limits_have_defaults_and_named_errors() {
        assert_eq!(
            load_server_limits(&lookup(&[])).unwrap(),
            ServerLimits::default()
        );
        let l = load_server_limits(&lookup(&[
            (HTTP_HEADER_TIMEOUT_SECS, "2"),
            (HTTP_BODY_TIMEOUT_SECS, "3"),
            (HTTP_MAX_CONNECTIONS, "5"),
        ]))
        .unwrap();
        assert_eq!(
            (
                l.header_timeout.as_secs(),
                l.body_timeout.as_secs(),
                l.max_connections
            ),
            (2, 3, 5)
        );
        for name in [
            HTTP_HEADER_TIMEOUT_SECS,
            HTTP_BODY_TIMEOUT_SECS,
            HTTP_MAX_CONNECTIONS,
        ] {
            let err = load_server_limits(&lookup(&[(name, "0")])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn webhook_keys_are_required_unless_anonymous_is_explicit() {
        let none = load_webhook_keys(&lookup(&[])).unwrap();
        assert!(none
            .require()
            .unwrap_err()
            .to_string()
            .contains(WEBHOOK_KEYS));
        let open = load_webhook_keys(&lookup(&[(WEBHOOK_ALLOW_ANONYMOUS, "true")])).unwrap();
        assert_eq!(open.require().unwrap(), WebhookAuth::Anonymous);
        let two = load_webhook_keys(&lookup(&[(
            WEBHOOK_KEYS,
            "old-key-0123456789, new-key-0123456789",
        )]))
        .unwrap();
        assert_eq!(
            two.require().unwrap(),
            WebhookAuth::Keys(vec![
                Secret::new("old-key-0123456789".into()),
                Secret::new("new-key-0123456789".into())
            ])
        );
    }

    #[test]
    fn bad_webhook_keys_are_refused_without_showing_them() {
        for value in [
            "short-secret",
            "a-good-key-0123456789,",
            "k1-0123456789abcdef,k2-0123456789abcdef,k3-0123456789abcdef",
        ] {
            let err = load_webhook_keys(&lookup(&[(WEBHOOK_KEYS, value)])).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(WEBHOOK_KEYS), "{text}");
            assert!(
                !text.contains("secret") && !text.contains("0123456789"),
                "{text}"
            );
        }
    }
}
