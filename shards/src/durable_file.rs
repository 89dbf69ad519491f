//! Small metadata files (node identity, schema catalog) written atomically and read back only
//! after their magic, version, length and checksum are verified.
//!
//! Layout (docs/FORMAT.md, "Metadata file"): magic (8 bytes) | version u16 | payload length u32 |
//! payload | crc32c u32 of everything before it. Written to `NAME.tmp`, fsynced, renamed over
//! `NAME`, then the directory is fsynced: a crash leaves the old file or the new one, never a mix.

use std::path::{Path, PathBuf};

use crate::io::sync_dir;

/// Bound on a metadata file's payload.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

const HEADER_LEN: usize = 8 + 2 + 4;

#[derive(Debug, thiserror::Error)]
pub enum DurableFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a {expected} file (bad magic number)")]
    BadMagic { path: PathBuf, expected: &'static str },
    #[error("{path}: format version {found} is not supported (this build reads up to version {supported})")]
    UnsupportedVersion { path: PathBuf, found: u16, supported: u16 },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// What a kind of metadata file is called and how it is marked.
#[derive(Debug, Clone, Copy)]
pub struct FileKind {
    pub name: &'static str,
    pub magic: [u8; 8],
    pub version: u16,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DurableFileError + '_ {
    move |source| DurableFileError::Io { path: path.to_path_buf(), source }
}

/// Atomically replaces `path` with `payload` framed as `kind`.
pub fn write(path: &Path, kind: FileKind, payload: &[u8]) -> Result<(), DurableFileError> {
    assert!(payload.len() <= MAX_PAYLOAD, "metadata payload of {} bytes exceeds the bound", payload.len());
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + 4);
    bytes.extend_from_slice(&kind.magic);
    bytes.extend_from_slice(&kind.version.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("tmp");
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        // A full disk leaves no partial temp file behind; the old file is untouched.
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(io_err(dir))
}

/// Reads and verifies a file written by [`write`]; Ok(None) when it does not exist.
pub fn read(path: &Path, kind: FileKind) -> Result<Option<Vec<u8>>, DurableFileError> {
    Ok(read_versions(path, kind, kind.version)?.map(|(_, payload)| payload))
}

/// [`read`] for a kind whose older versions `oldest..=kind.version` are still readable: returns
/// the file's version with its payload, which the caller decodes by version.
pub fn read_versions(path: &Path, kind: FileKind, oldest: u16) -> Result<Option<(u16, Vec<u8>)>, DurableFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |reason: String| DurableFileError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.len() < HEADER_LEN + 4 || bytes[..8] != kind.magic {
        return Err(DurableFileError::BadMagic { path: path.to_path_buf(), expected: kind.name });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if !(oldest..=kind.version).contains(&version) {
        return Err(DurableFileError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: kind.version,
        });
    }
    let len = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    if len > MAX_PAYLOAD || bytes.len() != HEADER_LEN + len + 4 {
        return Err(corrupt(format!("length {len} does not match the file size {}", bytes.len())));
    }
    let (body, crc) = bytes.split_at(HEADER_LEN + len);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(corrupt(format!("checksum mismatch (stored {stored:#010x}, computed {actual:#010x})")));
    }
    Ok(Some((version, body[HEADER_LEN..].to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: FileKind = FileKind { name: "test", magic: *b"ENIGTEST", version: 3 };

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.meta");
        assert!(read(&path, KIND).unwrap().is_none());
        write(&path, KIND, b"first").unwrap();
        write(&path, KIND, b"second").unwrap();
        assert_eq!(read(&path, KIND).unwrap().unwrap(), b"second");
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.meta");
        write(&path, KIND, b"payload bytes").unwrap();
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(&path, KIND).is_err(), "flip at {i} went unnoticed");
            std::fs::write(&path, &good[..i]).unwrap();
            assert!(read(&path, KIND).is_err(), "truncation at {i} went unnoticed");
        }
        let other = FileKind { version: 4, ..KIND };
        std::fs::write(&path, &good).unwrap();
        assert!(matches!(read(&path, other), Err(DurableFileError::UnsupportedVersion { found: 3, .. })));
        assert_eq!(read_versions(&path, other, 3).unwrap(), Some((3, b"payload bytes".to_vec())));
        assert!(matches!(read_versions(&path, other, 4), Err(DurableFileError::UnsupportedVersion { found: 3, .. })));
    }
}
