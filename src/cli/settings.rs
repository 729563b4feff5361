//! The settings as an operator reads them: one row per setting, named as it is set, values in
//! words and units, every secret as `***`.

use std::fmt::Write as _;

use crate::config::acs::{AcsAuth, ACS_CONNECTION_STRING, ACS_ENDPOINT};
use crate::config::archive::{
    ARCHIVED_NOTIFY_QUEUE, TRANSFER_ACCESS_TIER, TRANSFER_ENCRYPTION_SCOPE,
    TRANSFER_IMMUTABILITY_DAYS, TRANSFER_LEGAL_HOLD,
};
use crate::config::naming::BLOB_NAME_TEMPLATE;
use crate::config::storage::{StorageCredential, StorageForm};
use crate::config::{
    ArchiveMode, MessageEncoding, Settings, ARCHIVE_MODE, DELETE_AFTER_ARCHIVE,
    RECORDINGS_CONTAINER, RECORDINGS_STORAGE, TRANSFER_BLOCK_BYTES, TRANSFER_CONTENT_MD5,
    TRANSFER_MESSAGE_ENCODING, TRANSFER_PARALLEL_BLOCKS, TRANSFER_PARALLEL_RANGES, TRANSFER_QUEUE,
    TRANSFER_SHA256, WEBHOOK_MAX_BODY_BYTES,
};

/// One row: the setting's name (empty for a continuation line) and its value in words.
pub(crate) type Row = (&'static str, String);

/// The rows `archiver check` shows, in the order an operator sets them up.
pub(crate) fn rows(s: &Settings) -> Vec<Row> {
    let mut rows: Vec<Row> = vec![(
        ARCHIVE_MODE,
        match s.archive_mode {
            ArchiveMode::Queue => "queue (the webhook enqueues; RecordingTransfer archives)",
            ArchiveMode::Inline => "inline (the webhook archives before it answers)",
        }
        .to_string(),
    )];
    match &s.acs {
        Some(acs) => match &acs.auth {
            AcsAuth::AccessKey(_) => rows.push((
                ACS_CONNECTION_STRING,
                format!("endpoint {}, access key ***", acs.endpoint),
            )),
            AcsAuth::ManagedIdentity { client_id } => rows.push((
                ACS_ENDPOINT,
                format!("{}, {}", acs.endpoint, identity(client_id.as_deref())),
            )),
        },
        None => rows.push((ACS_CONNECTION_STRING, "not set".into())),
    }
    match &s.storage {
        Some(storage) => {
            let form = match storage.form {
                StorageForm::ConnectionString => "connection string",
                StorageForm::SasUrl => "SAS URL",
                StorageForm::Identity => "identity-based settings",
            };
            let credential = match &storage.credential {
                StorageCredential::SharedKey { account, .. } => {
                    format!("account {account}, account key ***")
                }
                StorageCredential::Sas(_) => "shared access signature ***".to_string(),
                StorageCredential::ManagedIdentity { client_id } => identity(client_id.as_deref()),
            };
            rows.push((storage.source, format!("{form}: {credential}")));
            rows.push(("", format!("blobs  {}", storage.blob_endpoint)));
            rows.push((
                "",
                match &storage.queue_endpoint {
                    Some(q) => format!("queues {q}"),
                    None => "queues none (the settings name no Queue service)".into(),
                },
            ));
        }
        None => rows.push((RECORDINGS_STORAGE, "not set".into())),
    }
    rows.push((RECORDINGS_CONTAINER, s.container.clone()));
    rows.push((
        TRANSFER_QUEUE,
        format!("{0} (poison queue {0}-poison)", s.transfer_queue),
    ));
    rows.push((
        TRANSFER_MESSAGE_ENCODING,
        match s.message_encoding {
            MessageEncoding::Base64 => "base64",
            MessageEncoding::None => "none",
        }
        .into(),
    ));
    rows.push((BLOB_NAME_TEMPLATE, s.blob_name_template.as_str().into()));
    let t = &s.transfer;
    rows.push((TRANSFER_BLOCK_BYTES, bytes(t.block_bytes as u64)));
    rows.push((TRANSFER_PARALLEL_BLOCKS, t.parallel_blocks.to_string()));
    rows.push((TRANSFER_PARALLEL_RANGES, t.parallel_ranges.to_string()));
    rows.push((TRANSFER_CONTENT_MD5, on_off(t.content_md5)));
    rows.push((TRANSFER_SHA256, on_off(t.sha256)));
    rows.push((DELETE_AFTER_ARCHIVE, on_off(t.delete_after_archive)));
    rows.push((
        "ACS_EXTRA_ALLOWED_HOSTS",
        if s.extra_allowed_hosts.is_empty() {
            "none".into()
        } else {
            s.extra_allowed_hosts
                .iter()
                .map(|h| match h.port {
                    Some(p) => format!("{}:{p}", h.host),
                    None => h.host.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    let a = &s.archive;
    let or_default = |v: Option<&str>, default: &str| v.unwrap_or(default).to_string();
    rows.push((
        TRANSFER_ACCESS_TIER,
        or_default(a.access_tier.map(|t| t.as_str()), "the account's default"),
    ));
    rows.push((
        TRANSFER_ENCRYPTION_SCOPE,
        or_default(a.encryption_scope.as_deref(), "the account's default"),
    ));
    rows.push((
        TRANSFER_IMMUTABILITY_DAYS,
        match a.immutability {
            Some(i) => format!("{} days, {}", i.days, i.mode.as_str()),
            None => "none".into(),
        },
    ));
    rows.push((TRANSFER_LEGAL_HOLD, on_off(a.legal_hold)));
    rows.push((
        ARCHIVED_NOTIFY_QUEUE,
        or_default(a.notify_queue.as_deref(), "none"),
    ));
    rows.push((WEBHOOK_MAX_BODY_BYTES, bytes(s.max_body_bytes as u64)));
    rows
}

fn identity(client_id: Option<&str>) -> String {
    match client_id {
        Some(id) => format!("managed identity (user-assigned, client id {id})"),
        None => "managed identity (system-assigned)".into(),
    }
}

fn on_off(on: bool) -> String {
    if on { "on" } else { "off" }.into()
}

/// `4 MiB`, `1.5 GiB`, `512 bytes`: binary units, as the settings' limits are.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The rows as an aligned table, indented by two spaces.
pub(crate) fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in rows {
        let _ = writeln!(out, "  {name:width$}  {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Settings::load(&lookup).unwrap()
    }

    #[test]
    fn settings_read_as_a_table_without_secrets_or_debug_structs() {
        let key = "c2VjcmV0LWFjcy1rZXktc2VjcmV0LWFjcy1rZXk=";
        let s = settings(&[
            (
                "ACS_CONNECTION_STRING",
                &format!("endpoint=https://contoso.communication.azure.com/;accesskey={key}"),
            ),
            ("RECORDINGS_STORAGE", "UseDevelopmentStorage=true"),
            ("TRANSFER_BLOCK_BYTES", "8388608"),
            ("TRANSFER_ACCESS_TIER", "Cool"),
        ]);
        let shown = table(&rows(&s));
        // Names and values in two aligned columns.
        let column = |l: &str| {
            l.len()
                - l[2..]
                    .trim_start_matches(|c: char| c != ' ')
                    .trim_start()
                    .len()
        };
        let first = column(shown.lines().next().unwrap());
        assert!(shown.lines().all(|l| column(l) == first), "{shown}");
        let squeezed: Vec<String> = shown
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        for expected in [
            "ARCHIVE_MODE queue",
            "ACS_CONNECTION_STRING endpoint https://contoso.communication.azure.com/, access key ***",
            "RECORDINGS_STORAGE connection string: account devstoreaccount1, account key ***",
            "blobs http://127.0.0.1:10000/devstoreaccount1",
            "TRANSFER_BLOCK_BYTES 8 MiB",
            "TRANSFER_SHA256 on",
            "TRANSFER_QUEUE recording-transfers (poison queue recording-transfers-poison)",
            "WEBHOOK_MAX_BODY_BYTES 2 MiB",
            "TRANSFER_ACCESS_TIER Cool",
            "ARCHIVED_NOTIFY_QUEUE none",
        ] {
            assert!(
                squeezed.iter().any(|l| l.starts_with(expected)),
                "{expected}\n{shown}"
            );
        }
        assert!(!shown.contains(key), "{shown}");
        assert!(
            !shown.contains(crate::config::storage::DEV_ACCOUNT_KEY),
            "{shown}"
        );
        // No Rust Debug output: no struct names, braces or field names.
        for debug in [
            "Settings {",
            "TransferSettings",
            "block_bytes",
            "Some(",
            "\"",
        ] {
            assert!(!shown.contains(debug), "{debug}\n{shown}");
        }
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(65536), "64 KiB");
        assert_eq!(bytes(4 * 1024 * 1024), "4 MiB");
        assert_eq!(bytes(1_610_612_736), "1.5 GiB");
    }
}
