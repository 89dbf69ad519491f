//! The glommio I/O edge shared by every file a shard owns: executor start-up preparation and
//! directory durability. Nothing here knows about WAL or SSTable layouts.
//!
//! Invariant: [`prepare_executor_io`] runs on a shard's executor before that executor opens any
//! other `DmaFile`, or every later O_DIRECT read on the device fails with EOPNOTSUPP.

use std::path::{Path, PathBuf};

use glommio::io::OpenOptions;

/// Name of the probe file kept in each shard directory.
pub const DMA_PROBE_FILE: &str = ".dma-probe";

/// Size of the probe file: at least one 4 KiB block, so glommio's poll probe reads real data.
const DMA_PROBE_SIZE: usize = 4096;

/// Works around upstream glommio issue 605 (see docs/GLOMMIO.md, pitfall 1).
///
/// The first time an executor thread opens a `DmaFile` on a device, glommio probes io_uring
/// poll support by reading the file's first block. If that file is readable and empty, the
/// probe "succeeds", glommio caches "pollable" for the thread and every later DMA read on the
/// device fails with EOPNOTSUPP while writes keep working. Opening a non-empty file read-only
/// first makes the probe fail cleanly (ENOTSUP), glommio caches "not pollable", and reads work.
///
/// Call once per executor, before any other `DmaFile` is opened, with a directory on the same
/// filesystem as the shard's data. The probe file is written with `std::fs` (not glommio), so
/// this is safe as the very first I/O of a fresh executor.
pub async fn prepare_executor_io(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(DMA_PROBE_FILE);
    let fresh = std::fs::metadata(&path).map(|m| m.len() < DMA_PROBE_SIZE as u64).unwrap_or(true);
    if fresh {
        std::fs::write(&path, vec![0xA5u8; DMA_PROBE_SIZE])?;
    }
    let file = OpenOptions::new().read(true).dma_open(&path).await?;
    file.close().await?;
    Ok(())
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Whether an I/O error says the disk (or the user's quota on it) is full: the one failure a
/// node waits out and retries instead of treating as damage.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// Whether `e` or any error in its source chain is an I/O error saying the disk is full.
pub fn caused_by_full_disk(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(error) = next {
        if error.downcast_ref::<std::io::Error>().is_some_and(is_disk_full) {
            return true;
        }
        next = error.source();
    }
    false
}

/// An I/O error with the path it happened on, for typed errors that name their file.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct PathIoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PathIoError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PathIoError { op, path: path.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::io::{DmaFile, OpenOptions};
    use glommio::LocalExecutorBuilder;

    /// The first I/O of a brand-new executor creates, writes and reads back a brand-new file.
    /// Without the probe this read fails with EOPNOTSUPP (os error 95).
    #[test]
    fn fresh_executor_reads_back_a_brand_new_file_after_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let got = LocalExecutorBuilder::default()
            .spawn(move || async move {
                prepare_executor_io(&path).await.unwrap();
                let file_path = path.join("fresh.bin");
                let file = OpenOptions::new().read(true).write(true).create(true).dma_open(&file_path).await.unwrap();
                let mut buf = file.alloc_dma_buffer(4096);
                buf.as_bytes_mut().fill(0x5C);
                file.write_at(buf, 0).await.unwrap();
                file.fdatasync().await.unwrap();
                let read = file.read_at(0, 4096).await.unwrap();
                let all_match = read.iter().all(|b| *b == 0x5C);
                file.close().await.unwrap();
                // A second, separately opened file on the same device reads too.
                let again = DmaFile::open(&file_path).await.unwrap();
                let read2 = again.read_at(0, 16).await.unwrap();
                let first = read2[0];
                again.close().await.unwrap();
                (all_match, first)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got, (true, 0x5C));
    }
}
