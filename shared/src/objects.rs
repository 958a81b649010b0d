//! Where step results live: the object store named by `FERRY_OBJECT_STORE_URL`
//! (`file:///abs/dir` or `s3://bucket/prefix`) and the deterministic object
//! path of every step's Parquet output.
//!
//! Paths are `results/{execution_id}/{step_id}.parquet` under the prefix, so a
//! retried step overwrites its earlier output instead of adding a second one.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore};
use url::Url;

use crate::error::{Error, Result};

const FIELD: &str = "object_store_url";

/// An opened object store plus the prefix Ferry writes under.
#[derive(Clone)]
pub struct ObjectTarget {
    pub store: Arc<dyn ObjectStore>,
    /// Prefix inside the store (empty for `file://`, whose store is rooted
    /// at the directory itself).
    pub prefix: Path,
    /// `s3://bucket` or `file:///abs/dir`: what [`ObjectTarget::url_of`]
    /// puts in front of an object path.
    pub base_url: String,
    /// The same store seen as multipart uploads with ids (S3): uploads
    /// opened through it can be recorded and aborted by another process.
    pub multipart: Option<Arc<dyn MultipartStore>>,
    /// The directory of a `file://` store.
    root: Option<PathBuf>,
}

impl std::fmt::Debug for ObjectTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectTarget")
            .field("base_url", &self.base_url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ObjectTarget {
    /// Opens `file:///abs/dir` (the directory is created if missing) or
    /// `s3://bucket/prefix` (credentials, region and endpoint from the usual
    /// `AWS_*` environment: `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...). Anything else is a validation
    /// error on `object_store_url`.
    pub fn open(url: &str) -> Result<ObjectTarget> {
        Self::open_with_options(url, &[])
    }

    /// Like [`ObjectTarget::open`], with object_store configuration keys
    /// (`aws_endpoint`, `aws_allow_http`, `aws_access_key_id`, ...) applied
    /// over the environment. Used where changing the process environment is
    /// not an option (tests, several stores in one process). Ignored for
    /// `file://`.
    pub fn open_with_options(url: &str, options: &[(&str, &str)]) -> Result<ObjectTarget> {
        let parsed = Url::parse(url).map_err(|_| invalid("the object store URL is not a valid URL"))?;
        match parsed.scheme() {
            "file" => open_file(&parsed),
            "s3" => open_s3(url, &parsed, options),
            other => Err(invalid(format!(
                "unsupported object store scheme '{other}': use file:///absolute/dir or s3://bucket/prefix"
            ))),
        }
    }

    /// This target writing through `store` instead (a wrapper of its own
    /// store): uploads then go through `store`'s `put_multipart`, whose ids
    /// are not known, so none are recorded.
    pub fn with_store(&self, store: Arc<dyn ObjectStore>) -> ObjectTarget {
        ObjectTarget {
            store,
            multipart: None,
            ..self.clone()
        }
    }

    /// `results/{execution_id}/{step_id}.parquet` under the prefix.
    pub fn step_path(&self, execution_id: &str, step_id: &str) -> Path {
        self.prefix
            .clone()
            .join("results")
            .join(execution_id)
            .join(format!("{step_id}.parquet"))
    }

    /// The URL reported for an object (`s3://bucket/prefix/results/…`,
    /// `file:///dir/results/…`).
    pub fn url_of(&self, path: &Path) -> String {
        format!("{}/{}", self.base_url, path)
    }

    /// Discards what an attempt that died while writing `path` left behind:
    /// on S3 the multipart upload `open_upload` it recorded is aborted (an
    /// upload already gone counts as done); on `file://` the local store's
    /// staging files of `path` (`<name>#<n>`, never listed, but taking disk
    /// space) are removed. The object itself, if one was published, is left.
    pub async fn discard_unfinished(
        &self,
        path: &Path,
        open_upload: Option<&str>,
    ) -> std::result::Result<(), object_store::Error> {
        if let (Some(multipart), Some(id)) = (&self.multipart, open_upload) {
            let id: MultipartId = id.to_owned();
            match multipart.abort_multipart(path, &id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        if let Some(root) = &self.root {
            remove_staging_files(root, path).map_err(|source| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// The inverse of [`ObjectTarget::url_of`]: the object path of a URL this
    /// target produced, or `None` when the URL points elsewhere.
    pub fn path_of(&self, url: &str) -> Option<Path> {
        let rest = url.strip_prefix(&self.base_url)?.strip_prefix('/')?;
        Path::parse(rest).ok()
    }
}

/// Removes `<root>/<path>#<digits>`: the side files in which the local store
/// stages a multipart upload until it renames the finished file into place.
fn remove_staging_files(root: &std::path::Path, path: &Path) -> std::io::Result<()> {
    let mut dest = root.to_path_buf();
    dest.extend(path.parts().map(|part| part.as_ref().to_owned()));
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(suffix) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('#'))
        else {
            continue;
        };
        if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> Error {
    Error::validation(FIELD, message)
}

fn open_file(url: &Url) -> Result<ObjectTarget> {
    if url
        .host_str()
        .is_some_and(|host| !host.is_empty() && host != "localhost")
    {
        return Err(invalid(
            "file:// URLs must name a local absolute directory (file:///abs/dir)",
        ));
    }
    let dir = url
        .to_file_path()
        .map_err(|()| invalid("file:// URLs must name a local absolute directory (file:///abs/dir)"))?;
    std::fs::create_dir_all(&dir).map_err(|e| {
        invalid(format!(
            "cannot create the results directory {}: {e}",
            dir.display()
        ))
    })?;
    let dir = dir.canonicalize().map_err(|e| {
        invalid(format!(
            "cannot open the results directory {}: {e}",
            dir.display()
        ))
    })?;
    let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| {
        invalid(format!(
            "cannot open the results directory {}: {e}",
            dir.display()
        ))
    })?;
    let base = Url::from_directory_path(&dir)
        .map_err(|()| invalid(format!("cannot express {} as a file:// URL", dir.display())))?;
    Ok(ObjectTarget {
        store: Arc::new(store),
        prefix: Path::default(),
        base_url: base.as_str().trim_end_matches('/').to_owned(),
        multipart: None,
        root: Some(dir),
    })
}

fn open_s3(raw: &str, url: &Url, options: &[(&str, &str)]) -> Result<ObjectTarget> {
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| invalid("s3:// URLs need a bucket: s3://bucket/prefix"))?;
    let prefix = Path::from_url_path(url.path())
        .map_err(|_| invalid("the s3:// prefix is not a valid object path"))?;
    let mut builder = AmazonS3Builder::from_env().with_url(raw);
    for (key, value) in options {
        let key =
            AmazonS3ConfigKey::from_str(key).map_err(|_| invalid(format!("unknown S3 option '{key}'")))?;
        builder = builder.with_config(key, *value);
    }
    // The builder's errors name configuration keys, never secret values.
    let store = builder
        .build()
        .map_err(|e| invalid(format!("cannot open the S3 store: {e}")))?;
    let store = Arc::new(store);
    Ok(ObjectTarget {
        store: store.clone(),
        prefix,
        base_url: format!("s3://{bucket}"),
        multipart: Some(store),
        root: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(result: Result<ObjectTarget>) -> Option<String> {
        match result {
            Err(Error::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn file_urls_create_the_directory_and_report_file_urls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("nested/results-root");
        let url = Url::from_directory_path(&root).expect("url");
        let target = ObjectTarget::open(url.as_str()).expect("open");
        assert!(root.is_dir());
        let path = target.step_path("exec_1", "step_2");
        assert_eq!(path.as_ref(), "results/exec_1/step_2.parquet");
        let reported = target.url_of(&path);
        let canonical = root.canonicalize().expect("canonical");
        assert_eq!(
            reported,
            format!("file://{}/results/exec_1/step_2.parquet", canonical.display())
        );
        assert_eq!(target.path_of(&reported), Some(path));
    }

    #[test]
    fn s3_urls_keep_their_prefix_in_object_paths() {
        let target = ObjectTarget::open_with_options(
            "s3://bucket/some/prefix",
            &[
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "x"),
                ("aws_secret_access_key", "y"),
            ],
        )
        .expect("open");
        let path = target.step_path("exec_1", "step_2");
        assert_eq!(path.as_ref(), "some/prefix/results/exec_1/step_2.parquet");
        assert_eq!(
            target.url_of(&path),
            "s3://bucket/some/prefix/results/exec_1/step_2.parquet"
        );
    }

    #[test]
    fn other_schemes_and_relative_paths_are_validation_errors() {
        assert_eq!(field(ObjectTarget::open("gs://bucket/x")).as_deref(), Some(FIELD));
        assert_eq!(field(ObjectTarget::open("not a url")).as_deref(), Some(FIELD));
        assert_eq!(
            field(ObjectTarget::open("s3:///no-bucket")).as_deref(),
            Some(FIELD)
        );
        assert_eq!(
            field(ObjectTarget::open("file://remote-host/dir")).as_deref(),
            Some(FIELD)
        );
    }
}
