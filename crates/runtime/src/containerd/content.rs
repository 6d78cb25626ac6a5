//! The content store: writing blobs (from bytes, an image archive or a registry stream) with
//! the labels that keep them from garbage collection, and reading small blobs back.
//!
//! A blob containerd already has is not written again: `Content.Write` answers the initial
//! STAT with the committed size, and a registry blob is only opened after that answer.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    Info as ContentInfo, ReadContentRequest, UpdateRequest as ContentUpdate, WriteAction,
    WriteContentRequest,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Code;
use tracing::debug;

use super::{Containerd, Lease};
use crate::archive::BlobRef;
use crate::error::RuntimeError;
use crate::image::Descriptor;
use crate::pull::RemoteBlob;

/// Upload chunk size for `Content.Write`.
const CHUNK: usize = 1 << 20;

/// Where a blob's bytes come from.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    Bytes(&'a [u8]),
    Archive(&'a Path, BlobRef),
    /// A registry blob, opened only if containerd lacks it: present layers are never downloaded.
    Remote(&'a RemoteBlob),
}

impl Containerd {
    /// Writes one blob unless containerd already has it, and makes sure it carries `labels`.
    pub(super) async fn content_write(
        &self,
        desc: &Descriptor,
        source: Source<'_>,
        labels: BTreeMap<String, String>,
        lease: &Lease,
    ) -> Result<(), RuntimeError> {
        let written = self
            .content_write_inner(desc, source, labels, lease)
            .await?;
        if let Source::Remote(remote) = source {
            remote.finished(written);
        }
        Ok(())
    }

    /// [`Self::content_write`]; returns whether any bytes were written (false: already there).
    async fn content_write_inner(
        &self,
        desc: &Descriptor,
        source: Source<'_>,
        labels: BTreeMap<String, String>,
        lease: &Lease,
    ) -> Result<bool, RuntimeError> {
        let digest = desc.digest.clone();
        let err = |s| RuntimeError::grpc("write content", &digest, s);
        let total = desc.size;
        let labels: HashMap<String, String> = labels.into_iter().collect();
        let msg = |action: WriteAction, offset: i64, data: Vec<u8>, labels| WriteContentRequest {
            action: action as i32,
            r#ref: format!("hivemind-import-{digest}"),
            total,
            expected: digest.clone(),
            offset,
            data,
            labels,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Go's gRPC server sends response headers with its first message, so the STAT must be
        // queued before awaiting the call.
        let _ = tx
            .send(msg(WriteAction::Stat, 0, Vec::new(), HashMap::new()))
            .await;
        let mut client = ContentClient::new(self.channel());
        let mut replies = match client
            .write(self.leased(ReceiverStream::new(rx), lease))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => {
                return self.content_label(&digest, labels).await.map(|()| false);
            }
            Err(s) => return Err(err(s)),
        };
        let next = |r: Option<Result<_, tonic::Status>>| match r {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(s)) => Err(s),
            None => Err(tonic::Status::unknown("content write stream ended early")),
        };
        let stat = match next(replies.next().await) {
            Ok(stat) => stat,
            Err(s) if s.code() == Code::AlreadyExists => {
                return self.content_label(&digest, labels).await.map(|()| false);
            }
            Err(s) => return Err(err(s)),
        };
        let mut offset = stat.offset;
        if offset < total {
            match source {
                Source::Bytes(bytes) => {
                    for chunk in bytes[offset as usize..].chunks(CHUNK) {
                        let _ = tx
                            .send(msg(
                                WriteAction::Write,
                                offset,
                                chunk.to_vec(),
                                HashMap::new(),
                            ))
                            .await;
                        next(replies.next().await).map_err(err)?;
                        offset += chunk.len() as i64;
                    }
                }
                Source::Remote(remote) => {
                    let mut stream = remote.open().await?;
                    // The registry sends the whole blob; skip what an interrupted write kept.
                    let mut skip = offset as u64;
                    let mut buf = Vec::with_capacity(CHUNK);
                    loop {
                        let chunk = stream.next().await.transpose()?;
                        let mut data = chunk.as_deref().unwrap_or(&[]);
                        let cut = skip.min(data.len() as u64);
                        skip -= cut;
                        data = &data[cut as usize..];
                        buf.extend_from_slice(data);
                        // Network chunks are small; send containerd 1 MiB writes.
                        if buf.len() >= CHUNK || (chunk.is_none() && !buf.is_empty()) {
                            let len = buf.len() as i64;
                            let data = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
                            let _ = tx
                                .send(msg(WriteAction::Write, offset, data, HashMap::new()))
                                .await;
                            next(replies.next().await).map_err(err)?;
                            offset += len;
                        }
                        if chunk.is_none() {
                            break;
                        }
                    }
                    if offset != total {
                        return Err(remote.short(offset as u64));
                    }
                }
                Source::Archive(path, blob) => {
                    let io_err = |e| RuntimeError::io("read image archive", path, e);
                    let mut file = tokio::fs::File::open(path).await.map_err(io_err)?;
                    file.seek(std::io::SeekFrom::Start(blob.offset + offset as u64))
                        .await
                        .map_err(io_err)?;
                    let mut buf = vec![0u8; CHUNK];
                    while offset < total {
                        let want = CHUNK.min((total - offset) as usize);
                        file.read_exact(&mut buf[..want]).await.map_err(io_err)?;
                        let _ = tx
                            .send(msg(
                                WriteAction::Write,
                                offset,
                                buf[..want].to_vec(),
                                HashMap::new(),
                            ))
                            .await;
                        next(replies.next().await).map_err(err)?;
                        offset += want as i64;
                    }
                }
            }
        }
        // Commit must carry the current offset: 0 would truncate and fail size validation.
        let _ = tx
            .send(msg(WriteAction::Commit, offset, Vec::new(), labels.clone()))
            .await;
        match next(replies.next().await) {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                return self.content_label(&digest, labels).await.map(|()| false);
            }
            Err(s) => return Err(err(s)),
        }
        drop(tx);
        debug!(%digest, total, "blob written");
        Ok(offset > stat.offset)
    }

    /// Sets `labels` on an existing blob (a blob written earlier may lack the GC references).
    async fn content_label(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel())
            .update(self.request(ContentUpdate {
                info: Some(ContentInfo {
                    digest: digest.to_string(),
                    size: 0,
                    created_at: None,
                    updated_at: None,
                    labels,
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map(|_| ())
            .map_err(|s| RuntimeError::grpc("label content", digest, s))
    }

    /// Reads a whole blob (manifests and configs: small).
    pub(super) async fn content_read(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let err = |s| RuntimeError::grpc("read content", digest, s);
        let mut stream = ContentClient::new(self.channel())
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(err)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(err)?.data);
        }
        Ok(out)
    }
}
