//! The spec's monolithic upload, for registries that refuse chunks (405,
//! or another refusal of a `PATCH`; Google Artifact Registry takes none):
//! the whole blob streamed as the body of one `PUT <location>?digest=`. A
//! blob whose digest is only known once produced is produced twice: once
//! to hash it, once to send it.

use std::sync::Mutex;

use anyhow::anyhow;
use reqwest::{Method, header};
use url::Url;

use super::client::RegistryClient;
use super::error::{STORED, StatusError};
use super::retry::classify;
use super::upload::{Failure, OCTET_STREAM};
use super::upload_source::{
    Transfer, UploadOutcome, UploadRequest, body_stream, check_expected, drain,
};
use crate::reference::Repository;

impl RegistryClient {
    /// The spec's monolithic upload: one `PUT <location>?digest=` with the
    /// whole blob as its body, streamed from the source with its length.
    /// The digest goes in the URL, so a blob not known in advance is
    /// produced once to hash it (nothing is kept), then again to send it.
    pub(super) async fn send_monolithic(
        &self,
        repo: &Repository,
        location: &Url,
        request: &UploadRequest<'_>,
    ) -> Result<UploadOutcome, Failure> {
        let (digest, size) = match &request.expected {
            Some(known) => known.clone(),
            None => drain(request.source.open()).await.map_err(Failure::Fatal)?,
        };
        let (pieces, end) = body_stream(request.source.open());
        let body = Mutex::new(Some(reqwest::Body::wrap_stream(pieces)));
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let result = self
            .send_once(Method::PUT, url, repo.path(), |r| {
                let r = r.header(header::CONTENT_TYPE, OCTET_STREAM);
                // The stream can be sent once; a repeat (a renewed token)
                // sends an empty body, which the registry refuses, and the
                // blob starts over in a new session.
                match body.lock().ok().and_then(|mut b| b.take()) {
                    Some(b) => r.header(header::CONTENT_LENGTH, size).body(b),
                    None => r.header(header::CONTENT_LENGTH, 0),
                }
            })
            .await;
        // The stream records its end before it yields its last bytes, so a
        // body sent whole has its verdict here.
        // What was sent must be what the URL names: the expected blob, or
        // what the hashing pass produced.
        match end.lock().ok().and_then(|mut e| e.take()) {
            Some(Err(e)) => return Err(Failure::Fatal(e)),
            Some(Ok((produced, produced_size))) if produced != digest || produced_size != size => {
                let error = check_expected(request, &produced, produced_size)
                    .err()
                    .unwrap_or_else(|| {
                        anyhow!(
                            "the blob's source gave other bytes when read again ({produced}, \
                             not {digest}): it must be deterministic"
                        )
                    });
                return Err(Failure::Fatal(error));
            }
            Some(Ok(_)) | None => {}
        }
        let response = match result {
            Ok(r) => r,
            Err(e) if classify(&e).is_some() => return Err(Failure::Restart(e)),
            Err(e) => return Err(Failure::Fatal(e)),
        };
        let status = response.status();
        if !STORED.contains(&status) {
            let error = anyhow!(StatusError::from_response(response).await)
                .context(format!("uploading blob {digest} whole"));
            return Err(match status.as_u16() {
                // The session was lost, or the bytes did not hash to the
                // digest (a source that changed between its two passes is
                // caught here by the registry): a fresh session.
                400 | 404 | 416 => Failure::Restart(error),
                _ => Failure::Fatal(error),
            });
        }
        Ok(UploadOutcome {
            digest,
            size,
            transfer: Transfer::Uploaded,
        })
    }
}
