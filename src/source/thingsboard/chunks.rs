//! Fetches a package chunk by chunk into the engine's partial file, resumable by
//! chunk index: the file holds whole chunks `0..n` of one package (named in the
//! sidecar `<part>.tb.json` with the chunk size), so a later attempt — after a
//! dropped connection or an agent restart — asks for chunk `n` next. A sidecar for
//! another package or chunk size, or none, starts the file over. Each chunk is
//! retried with backoff (`download_attempts`, the download engine's backoff); the
//! engine verifies the whole file afterwards with every checksum ThingsBoard gave.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::transport::{ChunkRequest, Transport};
use crate::config::{AccessToken, OtaKind};
use crate::download::retry::backoff;
use crate::download::{DownloadConfig, SPACE_CHECK_EVERY, check_free_space};
use crate::model::{FetchFailure, FetchReport, RemoteFetch};
use crate::persist::{self, JsonFile};

pub struct ChunkFetcher {
    pub transport: Arc<dyn Transport>,
    pub token: AccessToken,
    pub kind: OtaKind,
    pub title: String,
    pub version: String,
    pub size: Option<u64>,
    pub chunk_size: u32,
    pub download: DownloadConfig,
}

/// The sidecar: which package the partial file holds, in chunks of which size.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sidecar {
    kind: OtaKind,
    title: String,
    version: String,
    chunk_size: u32,
}

fn sidecar_path(part: &Path) -> PathBuf {
    let mut name = part.as_os_str().to_os_string();
    name.push(".tb.json");
    PathBuf::from(name)
}

fn sidecar_file(part: &Path) -> JsonFile<Sidecar> {
    JsonFile::at(sidecar_path(part)).compact()
}

impl ChunkFetcher {
    fn sidecar(&self) -> Sidecar {
        Sidecar {
            kind: self.kind,
            title: self.title.clone(),
            version: self.version.clone(),
            chunk_size: self.chunk_size,
        }
    }

    /// The first chunk to fetch, after trimming the file to whole chunks of this
    /// package.
    fn resume_point(&self, part: &Path) -> Result<u64, String> {
        let meta = sidecar_file(part);
        // A sidecar that does not parse means "start over", like none.
        let same = std::fs::read(meta.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Sidecar>(&b).ok())
            .is_some_and(|s| s == self.sidecar());
        let on_disk = std::fs::metadata(part).map_or(0, |m| m.len());
        let chunks = if same {
            on_disk / u64::from(self.chunk_size)
        } else {
            0
        };
        let keep = chunks * u64::from(self.chunk_size);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(part)
            .map_err(|e| format!("{}: {e}", part.display()))?;
        file.set_len(keep)
            .map_err(|e| format!("{}: {e}", part.display()))?;
        meta.save_blocking(&self.sidecar())
            .map_err(|e| e.to_string())?;
        if chunks > 0 {
            tracing::info!(title = %self.title, version = %self.version,
                "resuming ThingsBoard download at chunk {chunks} ({keep} bytes)");
        }
        Ok(chunks)
    }

    async fn chunk_with_retries(&self, index: u64) -> Result<bytes::Bytes, FetchFailure> {
        let request = ChunkRequest {
            kind: self.kind,
            title: &self.title,
            version: &self.version,
            chunk_size: self.chunk_size,
            index,
        };
        let attempts = self.download.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.transport.chunk(&self.token, request).await {
                Ok(b) if b.len() > self.chunk_size as usize => {
                    return Err(FetchFailure::permanent(format!(
                        "chunk {index}: {} bytes, more than the {} asked for",
                        b.len(),
                        self.chunk_size
                    )));
                }
                Ok(b) => return Ok(b),
                Err(e) if e.retryable() && attempt < attempts => {
                    let wait = backoff(
                        attempt,
                        self.download.backoff_base,
                        self.download.backoff_max,
                    );
                    tracing::warn!(title = %self.title, version = %self.version,
                        "chunk {index}: {e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(FetchFailure {
                        transient: e.retryable(),
                        message: format!("chunk {index}: {e} (after {attempt} attempts)"),
                    });
                }
            }
        }
    }
}

impl ChunkFetcher {
    /// Refuses to write `needed` more bytes when that would eat into the free
    /// space reserve (`free_space_reserve`), like every download path.
    fn room(&self, dir: &Path, needed: u64) -> Result<(), FetchFailure> {
        check_free_space(dir, needed, self.download.free_space_reserve)
            .map_err(|e| FetchFailure::permanent(e.to_string()))
    }
}

#[async_trait]
impl RemoteFetch for ChunkFetcher {
    async fn fetch(&self, part: &Path, report: FetchReport<'_>) -> Result<(), FetchFailure> {
        let mut index = self.resume_point(part).map_err(FetchFailure::permanent)?;
        let mut done = index * u64::from(self.chunk_size);
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .await
            .map_err(|e| FetchFailure::permanent(format!("{}: {e}", part.display())))?;
        let io = |e: std::io::Error| FetchFailure::permanent(format!("{}: {e}", part.display()));
        let dir = crate::persist::parent_dir(part);
        let left = self.size.map_or(0, |s| s.saturating_sub(done));
        self.room(dir, left)?;
        report(done, self.size);
        loop {
            if self.size.is_some_and(|s| done >= s) {
                break;
            }
            let data = match self.chunk_with_retries(index).await {
                Ok(data) => data,
                Err(e) => {
                    // What is on disk is what the next attempt resumes from.
                    file.flush().await.map_err(io)?;
                    return Err(e);
                }
            };
            if data.is_empty() {
                if let Some(size) = self.size {
                    return Err(FetchFailure::permanent(format!(
                        "the server sent no data at byte {done} of {size}"
                    )));
                }
                break;
            }
            let after = done + data.len() as u64;
            if let Some(max) = self.download.max_image_size.filter(|&m| after > m) {
                file.flush().await.map_err(io)?;
                return Err(FetchFailure::permanent(format!(
                    "chunk {index}: the package passes max_image_size ({max} bytes)"
                )));
            }
            if after / SPACE_CHECK_EVERY != done / SPACE_CHECK_EVERY {
                self.room(dir, data.len() as u64)?;
            }
            file.write_all(&data).await.map_err(io)?;
            done += data.len() as u64;
            index += 1;
            report(done, self.size);
            if data.len() < self.chunk_size as usize {
                break;
            }
        }
        persist::sync_file(&file, part)
            .await
            .map_err(|e| FetchFailure::permanent(e.to_string()))?;
        let _ = std::fs::remove_file(sidecar_path(part));
        Ok(())
    }
}
