//! The headers every archived blob is committed with (Put Block List, Put Blob): its index
//! tags, and what `TRANSFER_ACCESS_TIER`, `TRANSFER_ENCRYPTION_SCOPE`,
//! `TRANSFER_IMMUTABILITY_*` and `TRANSFER_LEGAL_HOLD` ask for. Pure: the REST specification's
//! request shape, tested here; Azurite ignores all but the tags and the tier.

use std::time::{Duration, SystemTime};

use super::tags::BlobTags;
use crate::config::ArchiveSettings;

/// `x-ms-tags`: URL-encoded `key=value&...` (version 2019-12-12 and later).
pub const TAGS: &str = "x-ms-tags";
/// `x-ms-access-tier` on a commit (block blobs, version 2018-11-09 and later).
pub const ACCESS_TIER: &str = "x-ms-access-tier";
/// `x-ms-encryption-scope` (version 2019-02-02 and later).
pub const ENCRYPTION_SCOPE: &str = "x-ms-encryption-scope";
/// `x-ms-immutability-policy-until-date`, RFC 1123 (version 2020-10-02 and later).
pub const IMMUTABILITY_UNTIL: &str = "x-ms-immutability-policy-until-date";
/// `x-ms-immutability-policy-mode`: `Unlocked` or `Locked`.
pub const IMMUTABILITY_MODE: &str = "x-ms-immutability-policy-mode";
/// `x-ms-legal-hold`: `true`.
pub const LEGAL_HOLD: &str = "x-ms-legal-hold";

/// The headers for one archived blob written at `now`. The retention of an immutability
/// policy counts from the commit, so it is computed per blob.
pub fn archive_headers(
    settings: &ArchiveSettings,
    tags: &BlobTags,
    now: SystemTime,
) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    if let Some(value) = tags.header_value() {
        headers.push((TAGS, value));
    }
    if let Some(tier) = settings.access_tier {
        headers.push((ACCESS_TIER, tier.as_str().to_string()));
    }
    if let Some(scope) = &settings.encryption_scope {
        headers.push((ENCRYPTION_SCOPE, scope.clone()));
    }
    if let Some(policy) = settings.immutability {
        let until = now + Duration::from_secs(u64::from(policy.days) * 86_400);
        headers.push((IMMUTABILITY_UNTIL, httpdate::fmt_http_date(until)));
        headers.push((IMMUTABILITY_MODE, policy.mode.as_str().to_string()));
    }
    if settings.legal_hold {
        headers.push((LEGAL_HOLD, "true".to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::archive::{AccessTier, Immutability, ImmutabilityMode};

    #[test]
    fn defaults_send_only_the_tags() {
        let mut tags = BlobTags::default();
        tags.push("callId", "c-1");
        let h = archive_headers(&ArchiveSettings::default(), &tags, SystemTime::UNIX_EPOCH);
        assert_eq!(h, vec![(TAGS, "callId=c-1".to_string())]);
        assert!(
            archive_headers(
                &ArchiveSettings::default(),
                &BlobTags::default(),
                SystemTime::UNIX_EPOCH
            )
            .is_empty(),
            "no empty x-ms-tags header"
        );
    }

    #[test]
    fn tier_scope_and_worm_follow_the_rest_specification() {
        let settings = ArchiveSettings {
            notify_queue: None,
            access_tier: Some(AccessTier::Cool),
            encryption_scope: Some("cmk-1".into()),
            immutability: Some(Immutability {
                days: 2,
                mode: ImmutabilityMode::Locked,
            }),
            legal_hold: true,
        };
        let h = archive_headers(&settings, &BlobTags::default(), SystemTime::UNIX_EPOCH);
        assert_eq!(
            h,
            vec![
                (ACCESS_TIER, "Cool".to_string()),
                (ENCRYPTION_SCOPE, "cmk-1".to_string()),
                (
                    IMMUTABILITY_UNTIL,
                    "Sat, 03 Jan 1970 00:00:00 GMT".to_string()
                ),
                (IMMUTABILITY_MODE, "Locked".to_string()),
                (LEGAL_HOLD, "true".to_string()),
            ]
        );
    }
}
