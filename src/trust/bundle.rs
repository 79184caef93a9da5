//! Signed bundles: a POSIX tar (ustar) holding exactly the image and its
//! `.minisig`, for sources that deliver one file per package (ThingsBoard, MCS,
//! or any other). The server's checksums cover the bundle; the signature covers
//! the image, which alone reaches the handler.

use std::io::{Read, Write};
use std::path::Path;

use super::TrustError;
use super::signature::MAX_SIGNATURE_LEN;
use crate::checksum::{Digests, MultiHasher};

/// What a bundle held.
#[derive(Debug)]
pub struct Unpacked {
    /// The image's name in the bundle.
    pub name: String,
    /// The `.minisig` text.
    pub signature: String,
    /// The image's digests, computed while it was written out.
    pub digests: Digests,
}

/// Whether the file at `path` is a tar archive (the `ustar` magic of its first
/// header). A firmware image never starts with 257 bytes and then `ustar`.
pub fn is_bundle(path: &Path) -> std::io::Result<bool> {
    let mut header = [0u8; 512];
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < header.len() {
        match file.read(&mut header[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(&header[257..262] == b"ustar")
}

/// Writes the bundle's image to `out` (not yet durable), hashing it with `hasher`, and
/// returns it with the signature. Blocking: run it off the runtime.
pub fn unpack(bundle: &Path, out: &Path, mut hasher: MultiHasher) -> Result<Unpacked, TrustError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e: std::io::Error| TrustError::Io(format!("{p}: {e}"))
    };
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).map_err(io(bundle))?);
    let mut image: Option<String> = None;
    let mut signature: Option<(String, String)> = None;
    let entries = archive
        .entries()
        .map_err(|e| TrustError::Bundle(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| TrustError::Bundle(e.to_string()))?;
        let name = entry_name(&entry)?;
        if !entry.header().entry_type().is_file() {
            return Err(TrustError::Bundle(format!(
                "{name:?} is not a regular file; a bundle holds exactly the image and its .minisig"
            )));
        }
        if name.ends_with(".minisig") && signature.is_none() {
            if entry.size() > MAX_SIGNATURE_LEN {
                return Err(TrustError::Bundle(format!("{name:?} is too large")));
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| TrustError::Bundle(format!("{name:?}: {e}")))?;
            signature = Some((name, text));
        } else if image.is_none() {
            let mut file = std::fs::File::create(out).map_err(io(out))?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| TrustError::Bundle(format!("{name:?}: {e}")))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(io(out))?;
            }
            image = Some(name);
        } else {
            return Err(TrustError::Bundle(format!(
                "unexpected {name:?}; a bundle holds exactly the image and its .minisig"
            )));
        }
    }
    let name = image.ok_or_else(|| TrustError::Bundle("holds no image".into()))?;
    let (sig_name, signature) = signature.ok_or(TrustError::Missing)?;
    if sig_name != format!("{name}.minisig") {
        return Err(TrustError::Bundle(format!(
            "the signature {sig_name:?} is not {name:?}.minisig"
        )));
    }
    Ok(Unpacked {
        name,
        signature,
        digests: hasher.finish(),
    })
}

/// An entry's name: one plain file name (a leading `./` allowed).
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, TrustError> {
    let path = entry
        .path()
        .map_err(|e| TrustError::Bundle(format!("entry name: {e}")))?;
    let name = path.to_string_lossy();
    let name = name.strip_prefix("./").unwrap_or(&name);
    if name.is_empty() || name.contains('/') || name == ".." {
        return Err(TrustError::Bundle(format!(
            "entry {name:?} is not a plain file name"
        )));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::ChecksumAlgorithm;

    fn tar_of(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(file.reopen().unwrap());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
        file
    }

    fn unpack_of(entries: &[(&str, &[u8])]) -> Result<Unpacked, TrustError> {
        let t = tar_of(entries);
        assert!(is_bundle(t.path()).unwrap());
        let out = tempfile::NamedTempFile::new().unwrap();
        unpack(
            t.path(),
            out.path(),
            MultiHasher::new([ChecksumAlgorithm::Sha256]),
        )
    }

    #[test]
    fn a_bundle_gives_its_image_and_signature_in_either_order() {
        for order in [[0, 1], [1, 0]] {
            let all: [(&str, &[u8]); 2] = [("fw.bin", b"image"), ("fw.bin.minisig", b"sig")];
            let u = unpack_of(&[all[order[0]], all[order[1]]]).unwrap();
            assert_eq!((u.name.as_str(), u.signature.as_str()), ("fw.bin", "sig"));
            assert_eq!(u.digests.length, 5);
        }
    }

    #[test]
    fn anything_but_an_image_and_its_signature_is_refused() {
        let e = unpack_of(&[("fw.bin", b"x")]).unwrap_err();
        assert_eq!(e, TrustError::Missing);
        let e = unpack_of(&[("fw.bin", b"x"), ("other.bin.minisig", b"s")]).unwrap_err();
        assert!(e.to_string().contains("is not \"fw.bin\".minisig"), "{e}");
        let e = unpack_of(&[("a", b"x"), ("b", b"y"), ("a.minisig", b"s")]).unwrap_err();
        assert!(e.to_string().contains("unexpected \"b\""), "{e}");
        let e = unpack_of(&[("dir/fw.bin", b"x")]).unwrap_err();
        assert!(e.to_string().contains("not a plain file name"), "{e}");
    }

    /// A signature entry is read only up to `MAX_SIGNATURE_LEN` bytes.
    #[test]
    fn an_oversized_signature_entry_is_refused() {
        let max = vec![b's'; MAX_SIGNATURE_LEN as usize];
        let u = unpack_of(&[("fw.bin", b"x"), ("fw.bin.minisig", &max)]).unwrap();
        assert_eq!(u.signature.len(), max.len());
        let over = vec![b's'; MAX_SIGNATURE_LEN as usize + 1];
        let e = unpack_of(&[("fw.bin", b"x"), ("fw.bin.minisig", &over)]).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn a_plain_image_is_not_a_bundle() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0u8; 4096]).unwrap();
        assert!(!is_bundle(f.path()).unwrap());
        std::fs::write(f.path(), b"short").unwrap();
        assert!(!is_bundle(f.path()).unwrap());
    }
}
