//! The deployable package, `dist/functionapp.zip`, as `scripts/package` builds it: exactly the
//! files the Functions host reads at the app root, the `handler` executable and linked against
//! glibc 2.17 symbols at most (the Functions images' glibc is not ours to choose), and a
//! `handler` that starts and answers the host's readiness probe.
//!
//! Building the package is a release build linked by zig, minutes long, so a plain `cargo test`
//! lists these tests as ignored; `scripts/test` (what CI runs) builds the package with
//! `scripts/package` beside the other tests and then runs these with `-- --ignored`.

mod support;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use archiver_testkit::host::HandlerProcess;
use object::read::elf::FileHeader;
use support::*;

const NEEDS_PACKAGE: &str =
    "needs dist/functionapp.zip: run scripts/package first (scripts/test does)";

/// The highest glibc symbol version the package may need.
const MAX_GLIBC: (u32, u32) = (2, 17);

/// The app-root files, their Unix modes, and the repo file each must equal.
const ENTRIES: [(&str, u32, Option<&str>); 4] = [
    ("handler", 0o755, None),
    ("host.json", 0o644, Some("host.json")),
    (
        "RecordingWebhook/function.json",
        0o644,
        Some("RecordingWebhook/function.json"),
    ),
    (
        "RecordingTransfer/function.json",
        0o644,
        Some("RecordingTransfer/function.json"),
    ),
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn package() -> zip::ZipArchive<File> {
    let path = repo("dist/functionapp.zip");
    let file =
        File::open(&path).unwrap_or_else(|e| panic!("{}: {e}; {NEEDS_PACKAGE}", path.display()));
    zip::ZipArchive::new(file).expect("dist/functionapp.zip is a zip file")
}

fn entry(zip: &mut zip::ZipArchive<File>, name: &str) -> Vec<u8> {
    let mut file = zip.by_name(name).unwrap();
    let mut data = Vec::with_capacity(file.size() as usize);
    file.read_to_end(&mut data).unwrap();
    data
}

#[test]
#[ignore = "needs dist/functionapp.zip: run scripts/package first (scripts/test does)"]
fn package_holds_exactly_the_app_root_files_with_their_modes() {
    let mut zip = package();
    let mut names: Vec<String> = zip.file_names().map(str::to_string).collect();
    names.sort();
    let mut expected: Vec<String> = ENTRIES.iter().map(|(n, _, _)| n.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
    for (name, mode, source) in ENTRIES {
        let unix_mode = zip.by_name(name).unwrap().unix_mode();
        assert_eq!(
            unix_mode.map(|m| m & 0o777),
            Some(mode),
            "{name}: mode {unix_mode:?}"
        );
        if let Some(source) = source {
            assert_eq!(
                entry(&mut zip, name),
                std::fs::read(repo(source)).unwrap(),
                "{name} differs from the repo's {source}: rebuild with scripts/package"
            );
        }
    }
    let host: serde_json::Value = serde_json::from_slice(&entry(&mut zip, "host.json")).unwrap();
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"], "handler",
        "host.json starts the packaged file"
    );
}

/// The glibc versions the ELF image requires (its `SHT_GNU_VERNEED` entries named
/// `GLIBC_x.y`), what the dynamic loader checks before running it; and whether it has a
/// dynamic loader at all (`PT_INTERP`).
fn glibc_needs(image: &[u8]) -> (Vec<(u32, u32)>, Vec<String>, bool) {
    let header = object::elf::FileHeader64::<object::Endianness>::parse(image).unwrap();
    let endian = header.endian().unwrap();
    let sections = header.sections(endian, image).unwrap();
    let mut versions = Vec::new();
    let mut other = Vec::new();
    if let Some((mut needs, link)) = sections.gnu_verneed(endian, image).unwrap() {
        let strings = sections.strings(endian, image, link).unwrap();
        while let Some((_, mut aux)) = needs.next().unwrap() {
            while let Some(aux) = aux.next().unwrap() {
                let name = String::from_utf8_lossy(aux.name(endian, strings).unwrap()).to_string();
                let parsed = name.strip_prefix("GLIBC_").and_then(|v| {
                    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
                    Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
                });
                match parsed {
                    Some(version) => versions.push(version),
                    None => other.push(name),
                }
            }
        }
    }
    let dynamic = header
        .program_headers(endian, image)
        .unwrap()
        .iter()
        .any(|p| p.p_type.get(endian) == object::elf::PT_INTERP);
    (versions, other, dynamic)
}

#[test]
#[ignore = "needs dist/functionapp.zip: run scripts/package first (scripts/test does)"]
fn packaged_handler_needs_glibc_2_17_at_most() {
    let image = entry(&mut package(), "handler");
    let (versions, other, dynamic) = glibc_needs(&image);
    assert!(
        !other.iter().any(|v| v.starts_with("GLIBC_PRIVATE")),
        "private glibc symbols: {other:?}"
    );
    if dynamic {
        let highest = versions.iter().max().copied();
        assert!(
            highest.is_some(),
            "a dynamically linked handler names the glibc versions it needs"
        );
        assert!(
            highest <= Some(MAX_GLIBC),
            "needs GLIBC_{}.{}; at most {}.{} runs on every Functions image",
            highest.unwrap().0,
            highest.unwrap().1,
            MAX_GLIBC.0,
            MAX_GLIBC.1
        );
        println!(
            "highest glibc symbol version: GLIBC_{}.{}",
            highest.unwrap().0,
            highest.unwrap().1
        );
    } else {
        assert!(versions.is_empty(), "a static binary needs no glibc");
    }
}

#[tokio::test]
#[ignore = "needs dist/functionapp.zip: run scripts/package first (scripts/test does)"]
async fn packaged_handler_starts_and_answers_the_readiness_probe() {
    use std::os::unix::fs::PermissionsExt;
    let mut zip = package();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handler");
    std::fs::write(&path, entry(&mut zip, "handler")).unwrap();
    // Unpack as the platform does: with the mode the zip records.
    let mode = zip.by_name("handler").unwrap().unix_mode().unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();

    let env = handler_env(None);
    let h = HandlerProcess::start(&path, &pairs(&env))
        .await
        .unwrap_or_else(|e| panic!("the packaged handler did not start: {e}"));
    let ready = h.client().get(h.url("/")).send().await.unwrap();
    assert!(ready.status().is_success(), "{}", ready.status());
    assert!(h.output().contains("handler listening"), "{}", h.output());
}
