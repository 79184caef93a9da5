//! The embedded default source: a local directory laid out as ESH's filesystem
//! firmware provider does — one folder per device type holding `*.properties` files
//! (`version`, `image`, optional `model`, `vendor`, `description`, `changelog`,
//! `prerequisiteVersion`, `md5Hash`, `sha256Hash`) beside the images they name.
//! A two-slot firmware (ESP8266 user1.bin + user2.bin) names its second image
//! with `image2` (and `md5Hash2`, `sha256Hash2`). `released = false` and
//! `groups = a,b` say who the firmware is released to (see `release.rs`).
//! A malformed file is skipped with a warning naming the file, line and key; it
//! never stops the others from being offered.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use super::config::{SourceConfig, SourceKeys, SourceKind};
use super::folder_file;
use super::properties::{self, Property};
use super::release;
use super::{FirmwareSource, SourceError};
use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::config::{ConfigError, DeviceConfig};
use crate::model::{Firmware, FirmwareLocation, FirmwarePart, Prerequisite, SECOND_IMAGE};

/// `kind = "directory"` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDirectory {
    /// Default `<state_dir>/firmware`; a relative path is resolved against the
    /// config file's directory.
    path: Option<toml::Spanned<String>>,
}

impl SourceKind for RawDirectory {
    const NAME: &'static str = "directory";

    fn build(self, source: &SourceKeys<'_>) -> Result<SourceConfig, ConfigError> {
        let path = match &self.path {
            Some(path) => source.check.dir(path, "path", "source.path")?,
            None => source.agent.state_dir.join("firmware"),
        };
        Ok(SourceConfig::Directory { path })
    }
}

/// A `*.properties` file that was not offered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// What one folder offers.
#[derive(Debug, Default)]
pub struct Scan {
    pub firmware: Vec<Firmware>,
    pub skipped: Vec<Skipped>,
}

pub struct DirectorySource {
    root: PathBuf,
}

impl DirectorySource {
    pub fn new(root: &Path) -> Self {
        DirectorySource {
            root: root.to_path_buf(),
        }
    }

    /// The folder for `device_type`; ESH thing type UIDs (`binding:type`) map to
    /// nested folders. `None` for a type that would escape the root.
    pub fn folder_for(&self, device_type: &str) -> Option<PathBuf> {
        let rel = PathBuf::from(device_type.replace(':', "/"));
        rel.components()
            .all(|c| matches!(c, Component::Normal(_)))
            .then(|| self.root.join(rel))
    }
}

#[async_trait]
impl FirmwareSource for DirectorySource {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    async fn firmware_for(&self, device: &DeviceConfig) -> Result<Vec<Firmware>, SourceError> {
        let Some(folder) = self.folder_for(&device.device_type) else {
            tracing::warn!(device = %device.id, device_type = %device.device_type,
                "device type cannot name a folder under the firmware directory");
            return Ok(Vec::new());
        };
        let device_type = device.device_type.clone();
        let root = self.root.clone();
        let scan = tokio::task::spawn_blocking(move || {
            root_problem(&root).map_or(Ok(()), |e| Err(SourceError::Config(e)))?;
            scan_folder(&folder, &root, &device_type)
        })
        .await
        .map_err(|e| SourceError::Io {
            context: "directory scan".into(),
            source: std::io::Error::other(e),
        })??;
        for s in &scan.skipped {
            tracing::warn!(file = %s.file.display(), key = s.key.as_deref().unwrap_or(""),
                "skipping firmware: {s}");
        }
        Ok(scan.firmware)
    }
}

/// Why the firmware directory `root` cannot be read (missing, not a folder), or
/// `None`: `check-config`, `check`, the run loop and `/status` say it instead of
/// offering nothing.
pub fn root_problem(root: &Path) -> Option<String> {
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!(
            "firmware directory {} is not a folder",
            root.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "firmware directory {} does not exist",
            root.display()
        )),
        Err(e) => Some(format!("firmware directory {}: {e}", root.display())),
    }
}

/// Reads every `*.properties` in `folder`, a device type's folder under the
/// firmware directory `root` (a missing type folder offers nothing: no firmware
/// for that type yet). Only regular files resolving inside `root` are read.
pub fn scan_folder(folder: &Path, root: &Path, device_type: &str) -> Result<Scan, SourceError> {
    let entries = match std::fs::read_dir(folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(source) => {
            return Err(SourceError::Io {
                context: folder.display().to_string(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "properties") && !is_localized(p))
        .collect();
    files.sort();

    let mut scan = Scan::default();
    for file in files {
        match read_firmware(&file, root, device_type) {
            Ok(fw) => {
                if scan.firmware.iter().any(|f| f.version == fw.version) {
                    scan.skipped.push(Skipped {
                        file,
                        line: None,
                        key: Some("version".into()),
                        reason: format!(
                            "version {} is already offered by another file",
                            fw.version
                        ),
                    });
                } else {
                    scan.firmware.push(fw);
                }
            }
            Err(s) => scan.skipped.push(s),
        }
    }
    Ok(scan)
}

/// ESH's localized companions (`*_de.properties`, `*_de_CH.properties`) only carry
/// translated texts; they are not firmware descriptions.
fn is_localized(path: &Path) -> bool {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let parts: Vec<&str> = stem.rsplitn(3, '_').collect();
    let lang = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_lowercase());
    let country = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase());
    match parts.as_slice() {
        [country_part, lang_part, _] if country(country_part) && lang(lang_part) => true,
        [lang_part, ..] if parts.len() >= 2 => lang(lang_part),
        _ => false,
    }
}

fn read_firmware(file: &Path, root: &Path, device_type: &str) -> Result<Firmware, Skipped> {
    let skip =
        |line: Option<usize>, key: Option<&str>, reason: String| skipped(file, line, key, reason);
    let text = folder_file::read_capped(file, root, folder_file::MAX_PROPERTIES_SIZE)
        .map_err(|e| skip(None, None, e))?;
    let text =
        String::from_utf8(text).map_err(|e| skip(None, None, format!("not UTF-8 text: {e}")))?;
    let props = properties::parse(&text);
    let required = |key: &str| -> Result<&Property, Skipped> {
        match props.get(key) {
            Some(p) if !p.value.trim().is_empty() => Ok(p),
            Some(p) => Err(skip(Some(p.line), Some(key), "is empty".into())),
            None => Err(skip(None, Some(key), "missing (required)".into())),
        }
    };
    let optional = |key: &str| {
        props
            .get(key)
            .map(|p| p.value.trim().to_string())
            .filter(|v| !v.is_empty())
    };

    let version_property = required("version")?;
    let version = version_property.value.trim().to_string();
    super::server_text::version(&version)
        .map_err(|e| skip(Some(version_property.line), Some("version"), e.to_string()))?;
    let (image_path, size) = image_file(file, root, required("image")?, "image")?;
    let main_checksums = checksums(file, &props, "")?;
    let parts = match props.get("image2") {
        Some(p) => {
            let (path, size) = image_file(file, root, p, "image2")?;
            vec![FirmwarePart {
                name: SECOND_IMAGE.to_string(),
                location: FirmwareLocation::File(path),
                size: Some(size),
                checksums: checksums(file, &props, "2")?,
            }]
        }
        None => Vec::new(),
    };

    Ok(Firmware {
        device_type: device_type.to_string(),
        version,
        location: FirmwareLocation::File(image_path),
        size: Some(size),
        checksums: main_checksums,
        prerequisite: optional("prerequisiteVersion").map(Prerequisite::AtLeast),
        vendor: optional("vendor"),
        model: optional("model"),
        description: optional("description"),
        changelog: optional("changelog"),
        deployment: None,
        download_headers: Default::default(),
        signature_url: None,
        parts,
        release: release::from_properties(&props)
            .map_err(|(line, key, reason)| skip(Some(line), Some(key), reason))?,
    })
}

fn skipped(file: &Path, line: Option<usize>, key: Option<&str>, reason: String) -> Skipped {
    Skipped {
        file: file.to_path_buf(),
        line,
        key: key.map(str::to_string),
        reason,
    }
}

/// The resolved path and size of the image the `key` (`image`, `image2`) of
/// `file` names: a file in the same folder that is (or links to) a regular file
/// inside `root`.
fn image_file(
    file: &Path,
    root: &Path,
    image: &Property,
    key: &str,
) -> Result<(PathBuf, u64), Skipped> {
    let skip = |reason: String| skipped(file, Some(image.line), Some(key), reason);
    let image_name = image.value.trim();
    let mut components = Path::new(image_name).components();
    let plain_name = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    );
    if !plain_name {
        return Err(skip(format!(
            "{image_name:?} must be a file name in the same folder"
        )));
    }
    let folder = file.parent().unwrap_or(root);
    let (image_path, meta) = folder_file::resolve_regular(&folder.join(image_name), root)
        .map_err(|e| skip(format!("{image_name}: {e}")))?;
    Ok((image_path, meta.len()))
}

/// The `md5Hash<suffix>` and `sha256Hash<suffix>` keys that are present.
fn checksums(
    file: &Path,
    props: &std::collections::BTreeMap<String, Property>,
    suffix: &str,
) -> Result<Vec<Checksum>, Skipped> {
    let mut checksums = Vec::new();
    for (key, algorithm) in [
        ("md5Hash", ChecksumAlgorithm::Md5),
        ("sha256Hash", ChecksumAlgorithm::Sha256),
    ] {
        let key = format!("{key}{suffix}");
        if let Some(p) = props.get(&key) {
            let c = Checksum::new(algorithm, &p.value)
                .map_err(|e| skipped(file, Some(p.line), Some(&key), e.to_string()))?;
            checksums.push(c);
        }
    }
    Ok(checksums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const MD5_HELLO: &str = "5d41402abc4b2a76b9719d911017c592";

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("fw-2.bin"), b"hello").unwrap();
        dir
    }

    #[test]
    fn reads_a_complete_description() {
        let dir = folder();
        fs::write(
            dir.path().join("fw-2.properties"),
            format!(
                "version = 2.0.0\nimage = fw-2.bin\nmodel = Model A\nvendor = ACME\n\
                 description = d\nchangelog = c\nprerequisiteVersion = 1.5\nmd5Hash = {MD5_HELLO}\n\
                 onlineChangelog = http://example.invalid\n"
            ),
        )
        .unwrap();
        // Localized companion: ignored.
        fs::write(dir.path().join("fw-2_de.properties"), "description = d\n").unwrap();
        let scan = scan_folder(dir.path(), dir.path(), "sensor").unwrap();
        assert_eq!(scan.skipped, vec![]);
        let fw = &scan.firmware[0];
        assert_eq!(fw.version, "2.0.0");
        assert_eq!(fw.device_type, "sensor");
        assert_eq!(fw.size, Some(5));
        assert_eq!(
            fw.location,
            FirmwareLocation::File(dir.path().join("fw-2.bin"))
        );
        assert_eq!(fw.prerequisite, Some(Prerequisite::AtLeast("1.5".into())));
        assert_eq!(fw.checksums[0].hex(), MD5_HELLO);
        assert_eq!(fw.model.as_deref(), Some("Model A"));
        assert_eq!(fw.vendor.as_deref(), Some("ACME"));
    }

    #[test]
    fn malformed_files_are_skipped_with_file_line_and_key() {
        let dir = folder();
        let cases = [
            (
                "a-noversion.properties",
                "image = fw-2.bin\n",
                None,
                "version",
            ),
            ("b-noimage.properties", "version = 1\n", None, "image"),
            (
                "c-missing.properties",
                "version = 1\nimage = nope.bin\n",
                Some(2),
                "image",
            ),
            (
                "d-escape.properties",
                "version = 1\nimage = ../fw-2.bin\n",
                Some(2),
                "image",
            ),
            (
                "e-md5.properties",
                "version = 1\nimage = fw-2.bin\nmd5Hash = 12zz\n",
                Some(3),
                "md5Hash",
            ),
            (
                "f-sha.properties",
                "\nversion = 1\nimage = fw-2.bin\nsha256Hash = abc\n",
                Some(4),
                "sha256Hash",
            ),
            (
                "g-empty.properties",
                "version =\nimage = fw-2.bin\n",
                Some(1),
                "version",
            ),
        ];
        for (name, text, _, _) in &cases {
            fs::write(dir.path().join(name), text).unwrap();
        }
        fs::write(dir.path().join("h-binary.properties"), [0xff, 0xfe, 0x00]).unwrap();
        fs::write(
            dir.path().join("z-good.properties"),
            "version = 3\nimage = fw-2.bin\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("zz-dup.properties"),
            "version = 3\nimage = fw-2.bin\n",
        )
        .unwrap();

        let scan = scan_folder(dir.path(), dir.path(), "t").unwrap();
        assert_eq!(scan.firmware.len(), 1);
        assert_eq!(scan.firmware[0].version, "3");
        assert_eq!(scan.skipped.len(), cases.len() + 2);
        for ((name, _, line, key), s) in cases.iter().zip(&scan.skipped) {
            assert_eq!(s.file, dir.path().join(name));
            assert_eq!(s.line, *line, "{s}");
            assert_eq!(s.key.as_deref(), Some(*key), "{s}");
            assert!(s.to_string().contains(name), "{s}");
        }
        assert!(scan.skipped[cases.len()].reason.contains("UTF-8"));
        assert!(
            scan.skipped[cases.len() + 1]
                .reason
                .contains("already offered")
        );
    }

    #[test]
    fn image2_adds_the_second_image_with_its_own_checksums() {
        let dir = folder();
        fs::write(dir.path().join("u2.bin"), b"hello").unwrap();
        fs::write(
            dir.path().join("a.properties"),
            format!("version = 2\nimage = fw-2.bin\nimage2 = u2.bin\nmd5Hash2 = {MD5_HELLO}\n"),
        )
        .unwrap();
        fs::write(
            dir.path().join("b.properties"),
            "version = 3\nimage = fw-2.bin\nimage2 = none.bin\n",
        )
        .unwrap();
        let scan = scan_folder(dir.path(), dir.path(), "t").unwrap();
        let part = &scan.firmware[0].parts[0];
        assert_eq!(part.name, SECOND_IMAGE);
        assert_eq!(
            part.location,
            FirmwareLocation::File(dir.path().join("u2.bin"))
        );
        assert_eq!((part.size, part.checksums[0].hex()), (Some(5), MD5_HELLO));
        assert!(scan.firmware[0].checksums.is_empty());
        assert_eq!(scan.skipped[0].key.as_deref(), Some("image2"));
        assert_eq!(scan.skipped[0].line, Some(3));
    }

    #[test]
    fn missing_folder_offers_nothing_and_types_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let scan = scan_folder(&dir.path().join("none"), dir.path(), "t").unwrap();
        assert!(scan.firmware.is_empty() && scan.skipped.is_empty());
        assert_eq!(root_problem(dir.path()), None);
        let missing = root_problem(&dir.path().join("none")).unwrap();
        assert!(missing.contains("does not exist"), "{missing}");
        let src = DirectorySource::new(dir.path());
        assert_eq!(src.folder_for("../etc"), None);
        assert_eq!(src.folder_for("/abs"), None);
        assert_eq!(
            src.folder_for("binding:thing"),
            Some(dir.path().join("binding/thing"))
        );
    }

    #[test]
    fn localized_names() {
        assert!(is_localized(Path::new("fw_de.properties")));
        assert!(is_localized(Path::new("fw_de_CH.properties")));
        assert!(!is_localized(Path::new("fw.properties")));
        assert!(!is_localized(Path::new("fw_v2.properties")));
        assert!(!is_localized(Path::new("de.properties")));
    }
}
