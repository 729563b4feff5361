//! How archived blobs are kept: access tier, encryption scope, WORM (a version-level
//! immutability policy or a legal hold per blob), and the queue told when a recording is
//! complete. All optional; without them blobs are written as the account and container default.

use super::{is_dns_style_name, parse_flag, parse_opt, ConfigError, Lookup};

/// Queue that gets one message per recording when its manifest is first written.
pub const ARCHIVED_NOTIFY_QUEUE: &str = "ARCHIVED_NOTIFY_QUEUE";
/// `Hot`, `Cool` or `Cold`: the tier every archived blob is committed in.
pub const TRANSFER_ACCESS_TIER: &str = "TRANSFER_ACCESS_TIER";
/// Encryption scope (customer-managed keys) every archived blob is written with.
pub const TRANSFER_ENCRYPTION_SCOPE: &str = "TRANSFER_ENCRYPTION_SCOPE";
/// Days each archived blob is protected by a version-level immutability policy.
pub const TRANSFER_IMMUTABILITY_DAYS: &str = "TRANSFER_IMMUTABILITY_DAYS";
/// `Unlocked` (default) or `Locked`: the mode of that policy.
pub const TRANSFER_IMMUTABILITY_MODE: &str = "TRANSFER_IMMUTABILITY_MODE";
/// Put a legal hold on each archived blob.
pub const TRANSFER_LEGAL_HOLD: &str = "TRANSFER_LEGAL_HOLD";

/// Longest retention a time-based immutability policy allows (docs: immutable storage,
/// "146,000 days", 400 years).
pub const MAX_IMMUTABILITY_DAYS: u32 = 146_000;

/// An access tier a blob can be committed in (`x-ms-access-tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTier {
    /// Lowest access cost, highest storage cost.
    Hot,
    /// Cheaper storage; billed for at least 30 days.
    Cool,
    /// Cheaper still; billed for at least 90 days.
    Cold,
}

impl AccessTier {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessTier::Hot => "Hot",
            AccessTier::Cool => "Cool",
            AccessTier::Cold => "Cold",
        }
    }
}

/// The mode of a version-level immutability policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImmutabilityMode {
    /// The retention can still be shortened or removed (for testing the setup).
    Unlocked,
    /// The retention can only be extended: compliance WORM.
    Locked,
}

impl ImmutabilityMode {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ImmutabilityMode::Unlocked => "Unlocked",
            ImmutabilityMode::Locked => "Locked",
        }
    }
}

/// A time-based retention for each archived blob, counted from its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Immutability {
    /// `TRANSFER_IMMUTABILITY_DAYS`.
    pub days: u32,
    /// `TRANSFER_IMMUTABILITY_MODE`.
    pub mode: ImmutabilityMode,
}

/// How archived blobs are kept, and who hears about finished recordings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// `ARCHIVED_NOTIFY_QUEUE`.
    pub notify_queue: Option<String>,
    /// `TRANSFER_ACCESS_TIER`; `None` leaves the account's default tier.
    pub access_tier: Option<AccessTier>,
    /// `TRANSFER_ENCRYPTION_SCOPE`.
    pub encryption_scope: Option<String>,
    /// `TRANSFER_IMMUTABILITY_DAYS` and `_MODE`.
    pub immutability: Option<Immutability>,
    /// `TRANSFER_LEGAL_HOLD`.
    pub legal_hold: bool,
}

impl ArchiveSettings {
    /// Whether any blob is written WORM, which needs a container with version-level
    /// immutability support.
    pub fn needs_worm(&self) -> bool {
        self.immutability.is_some() || self.legal_hold
    }

    pub(super) fn load(lookup: &impl Lookup) -> Result<ArchiveSettings, ConfigError> {
        let notify_queue = match lookup.get(ARCHIVED_NOTIFY_QUEUE) {
            None => None,
            Some(q) if is_dns_style_name(&q) => Some(q),
            Some(q) => {
                return Err(ConfigError::malformed(
                    ARCHIVED_NOTIFY_QUEUE,
                    format!("`{q}` is not a valid queue name (3-63 lower-case letters, digits and single hyphens)"),
                ))
            }
        };
        let access_tier = parse_opt(lookup, TRANSFER_ACCESS_TIER, "Hot, Cool or Cold", |v| {
            match v.to_ascii_lowercase().as_str() {
                "hot" => Some(AccessTier::Hot),
                "cool" => Some(AccessTier::Cool),
                "cold" => Some(AccessTier::Cold),
                // Archive blobs cannot be read back without hours of rehydration, so the
                // archive could not be verified; a lifecycle rule can move them later.
                _ => None,
            }
        })?;
        let encryption_scope = parse_opt(
            lookup,
            TRANSFER_ENCRYPTION_SCOPE,
            "an encryption scope name (3-63 letters, digits and hyphens, starting with a letter or digit)",
            |v| {
                let ok = (3..=63).contains(&v.len())
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && v.starts_with(|c: char| c.is_ascii_alphanumeric());
                ok.then(|| v.to_string())
            },
        )?;
        let days = parse_opt(
            lookup,
            TRANSFER_IMMUTABILITY_DAYS,
            "a number of days from 1 to 146000",
            |v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|d| (1..=MAX_IMMUTABILITY_DAYS).contains(d))
            },
        )?;
        let mode = parse_opt(
            lookup,
            TRANSFER_IMMUTABILITY_MODE,
            "Unlocked or Locked",
            |v| match v.to_ascii_lowercase().as_str() {
                "unlocked" => Some(ImmutabilityMode::Unlocked),
                "locked" => Some(ImmutabilityMode::Locked),
                _ => None,
            },
        )?;
        if mode.is_some() && days.is_none() {
            return Err(ConfigError::malformed(
                TRANSFER_IMMUTABILITY_MODE,
                format!("has no effect without {TRANSFER_IMMUTABILITY_DAYS}"),
            ));
        }
        Ok(ArchiveSettings {
            notify_queue,
            access_tier,
            encryption_scope,
            immutability: days.map(|days| Immutability {
                days,
                mode: mode.unwrap_or(ImmutabilityMode::Unlocked),
            }),
            legal_hold: parse_flag(lookup, TRANSFER_LEGAL_HOLD, false)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::lookup;

    #[test]
    fn nothing_set_keeps_the_account_defaults() {
        let s = ArchiveSettings::load(&lookup(&[])).unwrap();
        assert_eq!(s, ArchiveSettings::default());
        assert!(!s.needs_worm());
    }

    #[test]
    fn every_setting_is_read_case_insensitively() {
        let s = ArchiveSettings::load(&lookup(&[
            (ARCHIVED_NOTIFY_QUEUE, "recordings-archived"),
            (TRANSFER_ACCESS_TIER, "cool"),
            (TRANSFER_ENCRYPTION_SCOPE, "cmk-scope-1"),
            (TRANSFER_IMMUTABILITY_DAYS, "2555"),
            (TRANSFER_IMMUTABILITY_MODE, "LOCKED"),
            (TRANSFER_LEGAL_HOLD, "true"),
        ]))
        .unwrap();
        assert_eq!(s.notify_queue.as_deref(), Some("recordings-archived"));
        assert_eq!(s.access_tier, Some(AccessTier::Cool));
        assert_eq!(s.encryption_scope.as_deref(), Some("cmk-scope-1"));
        assert_eq!(
            s.immutability,
            Some(Immutability {
                days: 2555,
                mode: ImmutabilityMode::Locked
            })
        );
        assert!(s.legal_hold && s.needs_worm());
    }

    #[test]
    fn unusable_values_name_their_setting() {
        for (name, value) in [
            (ARCHIVED_NOTIFY_QUEUE, "Bad_Queue"),
            (TRANSFER_ACCESS_TIER, "Archive"),
            (TRANSFER_ENCRYPTION_SCOPE, "-x"),
            (TRANSFER_ENCRYPTION_SCOPE, "scope with spaces"),
            (TRANSFER_IMMUTABILITY_DAYS, "0"),
            (TRANSFER_IMMUTABILITY_DAYS, "146001"),
            (TRANSFER_IMMUTABILITY_MODE, "forever"),
            (TRANSFER_LEGAL_HOLD, "maybe"),
        ] {
            let mut pairs = vec![(name, value)];
            if name == TRANSFER_IMMUTABILITY_MODE {
                pairs.push((TRANSFER_IMMUTABILITY_DAYS, "1"));
            }
            let err = ArchiveSettings::load(&lookup(&pairs)).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let err =
            ArchiveSettings::load(&lookup(&[(TRANSFER_IMMUTABILITY_MODE, "Locked")])).unwrap_err();
        assert!(
            err.to_string().contains(TRANSFER_IMMUTABILITY_DAYS),
            "{err}"
        );
    }
}
