//! The disk spool of one table: batches that could not be committed, kept as their exact COPY
//! bytes in arrival order until the database takes them again. One file per batch, written to
//! a temporary name and renamed, so a crash leaves whole batches or none.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::lease::Fence;

/// A batch of one table: its ledger identity and its COPY payload.
#[derive(Debug)]
pub struct Batch {
    /// The `ingest_batches.batch_id`: a batch already in the ledger is never written twice.
    pub id: String,
    pub rows: usize,
    /// Earliest and latest exchange time of its rows, Unix ms.
    pub first_ms: u64,
    pub last_ms: u64,
    /// The shard leases its rows were written under (`--shards`); empty without leases.
    pub fences: Vec<Fence>,
    pub bytes: Vec<u8>,
}

/// Why a batch could not be spooled.
#[derive(Debug, thiserror::Error)]
#[error("cannot spool to {path}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    source: std::io::Error,
}

/// One table's spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Batches in the directory; counted here so the write path never lists it.
    len: usize,
}

impl Spool {
    /// Opens (and creates) `dir`, counting what a previous run left in it.
    pub fn open(dir: PathBuf) -> Spool {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create the spool directory");
        }
        let mut spool = Spool { dir, len: 0 };
        spool.len = spool.files().len();
        spool
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The spooled batches' files, oldest first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "copy"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Appends a batch; returns the bytes it takes on disk.
    pub fn push(&mut self, b: &Batch, now_ms: u64) -> Result<u64, SpoolError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        // <time-ordered seq>.copy: a text header line, then the COPY bytes.
        let name = format!(
            "{now_ms:020}-{:012}.copy",
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(name);
        let mut header = format!("{} {} {} {}", b.id, b.rows, b.first_ms, b.last_ms);
        // Fences last and only when there are any: a spool of an older collector has none.
        for f in &b.fences {
            header.push_str(&format!(" {}:{}", f.shard, f.generation));
        }
        header.push('\n');
        let mut data = header.into_bytes();
        data.extend_from_slice(&b.bytes);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &data)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|source| SpoolError { path, source })?;
        self.len += 1;
        Ok(data.len() as u64)
    }

    /// Reads a spooled batch back; `None` when the file is not one.
    pub fn read(path: &Path) -> Option<Batch> {
        let data = std::fs::read(path).ok()?;
        let nl = data.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&data[..nl]).ok()?;
        let mut it = header.split(' ');
        let id = it.next()?.to_owned();
        let rows = it.next()?.parse().ok()?;
        let first_ms = it.next()?.parse().ok()?;
        let last_ms = it.next()?.parse().ok()?;
        let fences = it
            .map(|f| {
                let (shard, generation) = f.split_once(':')?;
                Some(Fence {
                    shard: shard.parse().ok()?,
                    generation: generation.parse().ok()?,
                })
            })
            .collect::<Option<Vec<Fence>>>()?;
        Some(Batch {
            id,
            rows,
            first_ms,
            last_ms,
            fences,
            bytes: data[nl + 1..].to_vec(),
        })
    }

    /// Removes a replayed batch; returns the bytes freed.
    pub fn remove(&mut self, path: &Path) -> u64 {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(path);
        self.len = self.len.saturating_sub(1);
        size
    }

    /// Moves an unreadable file out of the way (kept as `.bad` for a person to look at).
    pub fn set_aside(&mut self, path: &Path) {
        tracing::error!(path = %path.display(), "unreadable spool file kept aside");
        let _ = std::fs::rename(path, path.with_extension("bad"));
        self.len = self.len.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str) -> Batch {
        Batch {
            id: id.into(),
            rows: 2,
            first_ms: 10,
            last_ms: 20,
            fences: vec![],
            bytes: vec![0, 1, b'\n', 255],
        }
    }

    #[test]
    fn batches_come_back_whole_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path().join("trades"));
        spool.push(&batch("a"), 5).expect("push");
        spool.push(&batch("b"), 5).expect("push");
        let files = spool.files();
        let read: Vec<Batch> = files.iter().filter_map(|p| Spool::read(p)).collect();
        assert_eq!(
            read.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(read[1].bytes, batch("b").bytes);
        assert_eq!(
            (read[1].rows, read[1].first_ms, read[1].last_ms),
            (2, 10, 20)
        );
        assert!(spool.remove(&files[0]) > 0);
        assert_eq!(Spool::open(dir.path().join("trades")).len(), 1);
    }

    #[test]
    fn a_batch_keeps_its_fences_and_an_old_header_reads_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path().to_path_buf());
        let mut b = batch("f");
        b.fences = vec![
            Fence {
                shard: 0,
                generation: 3,
            },
            Fence {
                shard: 5,
                generation: 12,
            },
        ];
        spool.push(&b, 1).expect("push");
        let read = Spool::read(&spool.files()[0]).expect("read");
        assert_eq!(read.fences, b.fences);
        assert_eq!(read.bytes, b.bytes);
        let old = dir.path().join("00-old.copy");
        std::fs::write(&old, b"id 2 10 20\nxy").expect("write");
        let read = Spool::read(&old).expect("an old header");
        assert!(read.fences.is_empty());
        std::fs::write(&old, b"id 2 10 20 3:x\nxy").expect("write");
        assert!(Spool::read(&old).is_none(), "a bad fence is not guessed at");
    }

    #[test]
    fn an_unreadable_file_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00-0.copy");
        std::fs::write(&path, b"no header line").expect("write");
        let mut spool = Spool::open(dir.path().to_path_buf());
        assert_eq!(spool.len(), 1);
        assert!(Spool::read(&path).is_none());
        spool.set_aside(&path);
        assert!(spool.is_empty());
        assert!(Spool::open(dir.path().to_path_buf()).is_empty());
    }
}
