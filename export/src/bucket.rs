//! An S3-compatible bucket for the daily set (`object_store`): `s3://bucket[/prefix]`, with the
//! endpoint, region and keys from the standard `AWS_*` environment (`AWS_ENDPOINT` for
//! DigitalOcean Spaces or MinIO, `AWS_ALLOW_HTTP=true` for a plain-HTTP one).

use std::path::Path;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::ObjectStore;
use tokio::io::AsyncWriteExt;

use crate::ExportError;

/// Where files are copied.
#[derive(Debug)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

impl Bucket {
    /// `s3://bucket[/prefix]`, configured from the environment.
    pub fn from_url(url: &str) -> Result<Self, ExportError> {
        Self::from_url_with(url, [])
    }

    /// `from_url`, with `object_store`'s S3 options (`aws_endpoint`, `aws_access_key_id`, …)
    /// over the environment's.
    pub fn from_url_with<'a>(
        url: &str,
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ExportError> {
        let bad = |why: &str| ExportError::Bucket(format!("{url:?}: {why}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("use s3://bucket[/prefix]"))?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return Err(bad("no bucket name"));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(name);
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|e: object_store::Error| bad(&e.to_string()))?;
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(|e| bad(&e.to_string()))?;
        Ok(Bucket {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_owned(),
            url: url.to_owned(),
        })
    }

    /// The store itself (tests read back what was uploaded).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The object key of `key` under the prefix.
    pub fn key(&self, key: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(key)
        } else {
            object_store::path::Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// `s3://bucket[/prefix]`, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object at `key`, chunk by chunk (memory stays bounded); `None` when there is none.
    async fn chunks(
        &self,
        key: &str,
    ) -> Result<
        Option<impl futures_util::Stream<Item = Result<bytes::Bytes, ExportError>>>,
        ExportError,
    > {
        use futures_util::TryStreamExt;
        let at = format!("{}/{key}", self.url);
        let fail = move |e: object_store::Error| ExportError::Bucket(format!("{at}: {e}"));
        match self.store.get(&self.key(key)).await {
            Ok(body) => Ok(Some(body.into_stream().map_err(fail))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }

    fn missing(&self, key: &str) -> ExportError {
        ExportError::Bucket(format!("{}/{key}: no such object", self.url))
    }

    /// The sha256 of the object at `key` as the bucket stores it (read back in full).
    pub async fn sha256(&self, key: &str) -> Result<String, ExportError> {
        use futures_util::TryStreamExt;
        use sha2::Digest;
        let body = self.chunks(key).await?.ok_or_else(|| self.missing(key))?;
        let mut body = std::pin::pin!(body);
        let mut hash = sha2::Sha256::new();
        while let Some(chunk) = body.try_next().await? {
            hash.update(&chunk);
        }
        Ok(hex::encode(hash.finalize()))
    }

    /// Copies the object at `key` to the file `to`; `false` when the bucket has no such object.
    pub async fn download(&self, key: &str, to: &Path) -> Result<bool, ExportError> {
        use futures_util::TryStreamExt;
        let Some(body) = self.chunks(key).await? else {
            return Ok(false);
        };
        let mut body = std::pin::pin!(body);
        let mut file = tokio::fs::File::create(to).await?;
        while let Some(chunk) = body.try_next().await? {
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(true)
    }

    /// Copies the file at `from` to `key` (multipart when large; memory stays bounded).
    pub async fn upload(&self, from: &Path, key: &str) -> Result<(), ExportError> {
        let fail = |e: std::io::Error| ExportError::Bucket(format!("{}/{key}: {e}", self.url));
        let mut file = tokio::fs::File::open(from).await?;
        let mut out = BufWriter::new(self.store.clone(), self.key(key));
        tokio::io::copy(&mut file, &mut out).await.map_err(fail)?;
        out.shutdown().await.map_err(fail)
    }
}
