//! The Parquet sink: Arrow record batches in, one Parquet object (zstd) out,
//! uploaded while it is written and in bounded memory.
//!
//! Bytes go from the Parquet encoder straight into an object_store upload.
//! Until one part's worth of bytes exists they are held in memory; a result
//! that stays smaller is stored with a single `PUT`. A larger one switches
//! to a multipart upload: parts are uploaded as they fill, at most
//! [`SinkOptions::max_parts_in_flight`] at a time, and row groups are flushed
//! at [`SinkOptions::row_group_rows`] rows or
//! [`SinkOptions::row_group_bytes`] encoded bytes, whichever comes first.
//!
//! The object only becomes visible when the upload completes, after the
//! caller's fence agreed. Cancel, a refused fence, an error, or dropping the
//! sink abort the multipart upload, so neither a partial object nor an open
//! upload is left behind (see `extract/design.md`).

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    MultipartId, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, PutResult, UploadPart,
    WriteMultipart,
};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use tokio_util::sync::CancellationToken;

use crate::metrics::UPLOADS;

/// How the sink encodes and uploads. The defaults suit S3 (parts ≥ 5 MiB)
/// and keep a step's memory well under 100 MiB.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Size of each multipart part (the last one may be smaller). S3 needs
    /// at least 5 MiB. Default 8 MiB.
    pub part_size: usize,
    /// Parts uploading at once before writing waits. Default 2.
    pub max_parts_in_flight: usize,
    /// Rows per row group at most. Default 1 048 576.
    pub row_group_rows: usize,
    /// Encoded bytes per row group at most (estimated). Default 16 MiB:
    /// the encoder holds a row group in memory, so this bounds the peak
    /// (32 MiB measured 91 MiB peak RSS on the benchmark, 16 MiB 57 MiB).
    pub row_group_bytes: usize,
    /// zstd level. Default 1: level 3 measured 25 % slower for little gain.
    pub zstd_level: i32,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            max_parts_in_flight: 2,
            row_group_rows: 1024 * 1024,
            row_group_bytes: 16 * 1024 * 1024,
            zstd_level: 1,
        }
    }
}

/// Why the sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("parquet encoding failed: {0}")]
    Encode(#[from] parquet::errors::ParquetError),
    #[error("upload failed: {0}")]
    Upload(#[from] object_store::Error),
    #[error("the upload was cancelled")]
    Cancelled,
    #[error("a newer attempt owns this execution; the upload was discarded")]
    Fenced,
}

/// What a completed upload produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOutput {
    pub rows: u64,
    /// Size of the Parquet object.
    pub bytes: u64,
    pub e_tag: Option<String>,
    /// Multipart parts uploaded; 0 when the object was small enough for one
    /// `PUT`.
    pub parts: usize,
    pub row_groups: usize,
}

/// Told the id of every multipart upload the sink opens, before its first
/// part is sent, so that an attempt dying mid-upload leaves a record the
/// next one can abort. Returning false (the record could not be kept) makes
/// the sink abort that upload and stop with [`SinkError::Fenced`].
pub type UploadJournal = Arc<dyn Fn(String) -> BoxFuture<'static, bool> + Send + Sync>;

/// A Parquet object being written. Create it with [`ParquetSink::new`],
/// [`write`](ParquetSink::write) batches, then [`finish`](ParquetSink::finish)
/// or [`abort`](ParquetSink::abort) it.
pub struct ParquetSink {
    store: Arc<dyn ObjectStore>,
    path: Path,
    schema: SchemaRef,
    options: SinkOptions,
    /// Created with the first batch, so that column encodings can be chosen
    /// from real data.
    writer: Option<ArrowWriter<Upload>>,
    rows: u64,
    /// Where multipart uploads with known ids are opened, and who is told
    /// of them; without it uploads go through `store.put_multipart`.
    journaled: Option<(Arc<dyn MultipartStore>, UploadJournal)>,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_upload(f, "ParquetSink", &self.path, ("rows", self.rows))
    }
}

/// How the sink's types show themselves: where they write and how far they
/// got, never the data, the store or the journal.
fn fmt_upload(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    path: &Path,
    (counter, count): (&str, u64),
) -> std::fmt::Result {
    f.debug_struct(name)
        .field("path", path)
        .field(counter, &count)
        .finish_non_exhaustive()
}

impl ParquetSink {
    /// A sink writing `schema`-shaped batches to `path`. Nothing is uploaded
    /// before the first batch.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, schema: SchemaRef, options: SinkOptions) -> Self {
        let options = SinkOptions {
            part_size: options.part_size.max(1),
            max_parts_in_flight: options.max_parts_in_flight.max(1),
            ..options
        };
        Self {
            store,
            path,
            schema,
            options,
            writer: None,
            rows: 0,
            journaled: None,
        }
    }

    /// Opens multipart uploads through `multipart` (the same store as the
    /// sink's, seen with upload ids) and tells `journal` each upload's id
    /// before its first part goes out.
    pub fn with_journal(mut self, multipart: Arc<dyn MultipartStore>, journal: UploadJournal) -> Self {
        self.journaled = Some((multipart, journal));
        self
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Parquet bytes produced so far (flushed row groups).
    pub fn bytes(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.bytes_written() as u64)
    }

    /// Encodes `batch`, then uploads whatever parts are full, waiting while
    /// too many are in flight. `cancel` interrupts only that wait; the caller
    /// then aborts the sink.
    pub async fn write(&mut self, batch: &RecordBatch, cancel: &CancellationToken) -> Result<(), SinkError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer(Some(batch))?.write(batch)?;
        self.rows += batch.num_rows() as u64;
        let pumped = self.pump(cancel).await;
        if let Err(SinkError::Upload(_)) = &pumped {
            UPLOADS.errors.inc();
        }
        pumped
    }

    /// The encoder, created on first use; `sample` (the first batch, when
    /// there is one) chooses the columns' encodings.
    fn writer(&mut self, sample: Option<&RecordBatch>) -> Result<&mut ArrowWriter<Upload>, SinkError> {
        let writer = match self.writer.take() {
            Some(writer) => writer,
            None => {
                let properties = properties(&self.schema, &self.options, sample)?;
                ArrowWriter::try_new(Upload::default(), self.schema.clone(), Some(properties))?
            }
        };
        Ok(self.writer.insert(writer))
    }

    /// Closes the upload, handing back its multipart upload if one was
    /// started (for the caller to abort).
    fn close_upload(&mut self) -> Option<WriteMultipart> {
        let writer = self.writer.as_mut()?;
        match std::mem::replace(&mut writer.inner_mut().state, State::Closed) {
            State::Multipart(multipart) => Some(multipart),
            State::Buffer(_) | State::Closed => None,
        }
    }

    /// Starts the multipart upload once a part's worth of bytes exists, and
    /// applies back pressure on parts in flight.
    async fn pump(&mut self, cancel: &CancellationToken) -> Result<(), SinkError> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let upload = writer.inner_mut();
        if let State::Buffer(buffer) = &mut upload.state
            && buffer.len() >= self.options.part_size
        {
            let buffered = Bytes::from(std::mem::take(buffer));
            // Not raced with cancel: a creation dropped half-way would leave
            // an upload whose id we never learn, so could never abort.
            let multipart: Box<dyn MultipartUpload> = match &self.journaled {
                Some((store, journal)) => {
                    let id = store.create_multipart(&self.path).await?;
                    if !journal(id.clone()).await {
                        if let Err(error) = store.abort_multipart(&self.path, &id).await {
                            tracing::warn!(path = %self.path, %error, "aborting the multipart upload failed");
                        }
                        return Err(SinkError::Fenced);
                    }
                    Box::new(KnownUpload::new(store.clone(), self.path.clone(), id))
                }
                None => self.store.put_multipart(&self.path).await?,
            };
            let mut multipart = WriteMultipart::new_with_chunk_size(multipart, self.options.part_size);
            multipart.put(buffered);
            upload.state = State::Multipart(multipart);
        }
        if let State::Multipart(multipart) = &mut upload.state {
            tokio::select! {
                result = multipart.wait_for_capacity(self.options.max_parts_in_flight) => result?,
                () = cancel.cancelled() => return Err(SinkError::Cancelled),
            }
        }
        Ok(())
    }

    /// Writes the footer, waits for the uploads in flight, asks `fence`
    /// whether this writer may still publish, and completes the upload. An
    /// empty result still gives a valid Parquet file with the schema. A
    /// refused fence or `cancel` aborts the upload instead.
    pub async fn finish<F, Fut>(
        mut self,
        cancel: &CancellationToken,
        fence: F,
    ) -> Result<SinkOutput, SinkError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool>,
    {
        let result = async {
            let row_groups = self.seal(cancel).await?;
            let allowed = tokio::select! {
                allowed = fence() => allowed,
                () = cancel.cancelled() => return Err(SinkError::Cancelled),
            };
            if !allowed {
                return Err(SinkError::Fenced);
            }
            self.publish(row_groups).await
        }
        .await;
        match &result {
            Ok(output) => {
                UPLOADS.bytes.inc_by(output.bytes);
                UPLOADS.completed.inc();
            }
            Err(error) => {
                if matches!(error, SinkError::Upload(_)) {
                    UPLOADS.errors.inc();
                }
                self.abort().await;
            }
        }
        result
    }

    /// Writes the footer and waits for the parts in flight; returns the
    /// number of row groups.
    async fn seal(&mut self, cancel: &CancellationToken) -> Result<usize, SinkError> {
        let writer = self.writer(None)?;
        let row_groups = writer.finish()?.num_row_groups();
        let upload = writer.inner_mut();
        upload.flush().map_err(parquet::errors::ParquetError::from)?;
        if let State::Multipart(multipart) = &mut upload.state {
            tokio::select! {
                result = multipart.wait_for_capacity(1) => result?,
                () = cancel.cancelled() => return Err(SinkError::Cancelled),
            }
        }
        Ok(row_groups)
    }

    /// Completes the sealed upload: the object appears.
    async fn publish(&mut self, row_groups: usize) -> Result<SinkOutput, SinkError> {
        let Some(upload) = self.writer.as_mut().map(ArrowWriter::inner_mut) else {
            return Err(SinkError::Upload(closed_error()));
        };
        let bytes = upload.bytes;
        let (result, parts) = match std::mem::replace(&mut upload.state, State::Closed) {
            State::Buffer(buffer) => (
                self.store
                    .put(&self.path, PutPayload::from(Bytes::from(buffer)))
                    .await?,
                0,
            ),
            State::Multipart(multipart) => {
                // Every byte went through the multipart upload in full parts
                // but the last.
                let parts =
                    usize::try_from(bytes.div_ceil(self.options.part_size as u64)).unwrap_or(usize::MAX);
                (multipart.finish().await?, parts)
            }
            State::Closed => return Err(SinkError::Upload(closed_error())),
        };
        Ok(SinkOutput {
            rows: self.rows,
            bytes,
            e_tag: result.e_tag,
            parts,
            row_groups,
        })
    }

    /// Aborts the multipart upload, if one was started. Failures are logged:
    /// the caller is already reporting the reason it aborted.
    pub async fn abort(mut self) {
        if let Some(multipart) = self.close_upload() {
            UPLOADS.aborts.inc();
            if let Err(error) = multipart.abort().await {
                tracing::warn!(path = %self.path, %error, "aborting the multipart upload failed");
            }
        }
    }
}

impl Drop for ParquetSink {
    /// A sink dropped mid-upload (its task was cancelled) still aborts its
    /// multipart upload, from a spawned task.
    fn drop(&mut self) {
        if let Some(multipart) = self.close_upload()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            UPLOADS.aborts.inc();
            let path = self.path.clone();
            handle.spawn(async move {
                if let Err(error) = multipart.abort().await {
                    tracing::warn!(%path, %error, "aborting a dropped multipart upload failed");
                }
            });
        }
    }
}

/// A multipart upload whose id the sink knows (and has recorded): parts go
/// through [`MultipartStore::put_part`] with their index, and completion
/// lists them in order.
struct KnownUpload {
    store: Arc<dyn MultipartStore>,
    path: Path,
    id: MultipartId,
    next_part: usize,
    parts: Arc<std::sync::Mutex<Vec<Option<PartId>>>>,
}

impl KnownUpload {
    fn new(store: Arc<dyn MultipartStore>, path: Path, id: MultipartId) -> Self {
        Self {
            store,
            path,
            id,
            next_part: 0,
            parts: Arc::default(),
        }
    }
}

impl std::fmt::Debug for KnownUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_upload(f, "KnownUpload", &self.path, ("next_part", self.next_part as u64))
    }
}

#[async_trait::async_trait]
impl MultipartUpload for KnownUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = self.next_part;
        self.next_part += 1;
        let (store, path, id, parts) = (
            self.store.clone(),
            self.path.clone(),
            self.id.clone(),
            self.parts.clone(),
        );
        Box::pin(async move {
            let part = store.put_part(&path, &id, index, data).await?;
            let mut parts = parts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if parts.len() <= index {
                parts.resize(index + 1, None);
            }
            parts[index] = Some(part);
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts = std::mem::take(
            &mut *self
                .parts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if parts.len() != self.next_part || parts.iter().any(Option::is_none) {
            return Err(object_store::Error::Generic {
                store: "ferry",
                source: "a part of the upload never finished".into(),
            });
        }
        self.store
            .complete_multipart(&self.path, &self.id, parts.into_iter().flatten().collect())
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.store.abort_multipart(&self.path, &self.id).await
    }
}

/// Where the encoder's bytes go.
#[derive(Default)]
struct Upload {
    state: State,
    /// All bytes written so far.
    bytes: u64,
}

enum State {
    /// Less than one part so far.
    Buffer(Vec<u8>),
    Multipart(WriteMultipart),
    Closed,
}

impl Default for State {
    fn default() -> Self {
        State::Buffer(Vec::new())
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.state {
            State::Buffer(buffer) => buffer.extend_from_slice(buf),
            // Full parts start uploading here, on the runtime this task runs on.
            State::Multipart(multipart) => multipart.write(buf),
            State::Closed => return Err(std::io::Error::other("the upload is closed")),
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn closed_error() -> object_store::Error {
    object_store::Error::Generic {
        store: "ferry",
        source: "the upload was already closed".into(),
    }
}

/// Writer properties: zstd at the configured level, row group limits, and
/// dictionary encoding only for columns that look low-cardinality in the
/// first batch (dictionaries on unique ids or timestamps cost time and
/// bytes and then fall back anyway).
fn properties(
    schema: &SchemaRef,
    options: &SinkOptions,
    sample: Option<&RecordBatch>,
) -> Result<WriterProperties, SinkError> {
    let level = ZstdLevel::try_new(options.zstd_level)?;
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(options.row_group_bytes.max(1)))
        // Values go to the column writers 8 192 at a time rather than the
        // default 1 024: fewer per-mini-batch passes (levels, statistics,
        // page size checks) on wide batches.
        .set_write_batch_size(8 * 1024)
        .set_created_by(format!("ferry {}", env!("CARGO_PKG_VERSION")))
        .set_dictionary_enabled(false);
    if let Some(sample) = sample {
        builder = dictionary_choices(builder, schema, sample)?;
    }
    Ok(builder.build())
}

fn dictionary_choices(
    mut builder: WriterPropertiesBuilder,
    schema: &SchemaRef,
    sample: &RecordBatch,
) -> Result<WriterPropertiesBuilder, SinkError> {
    let descriptor = ArrowSchemaConverter::new().convert(schema)?;
    for (leaf, column) in descriptor.columns().iter().enumerate() {
        let root = descriptor.get_column_root_idx(leaf);
        let Some(array) = sample.columns().get(root) else {
            continue;
        };
        if low_cardinality(array.as_ref()) {
            builder = builder.set_column_dictionary_enabled(column.path().clone(), true);
        }
    }
    Ok(builder)
}

/// Whether at most a tenth of the non-null values of `array` are distinct.
/// Only flat string, binary and fixed-width columns are considered.
pub(crate) fn low_cardinality(array: &dyn Array) -> bool {
    let valid = array.len() - array.null_count();
    if valid < 64 {
        return false;
    }
    let limit = valid / 10;
    let indices = (0..array.len()).filter(|&i| array.is_valid(i));
    match array.data_type() {
        DataType::Utf8 => under(
            indices.map(|i| array.as_string::<i32>().value(i).as_bytes()),
            limit,
        ),
        DataType::Binary => under(indices.map(|i| array.as_binary::<i32>().value(i)), limit),
        data_type => match data_type.primitive_width() {
            Some(width) if !matches!(data_type, DataType::Boolean) => {
                let data = array.to_data();
                let Some(values) = data.buffers().first() else {
                    return false;
                };
                let start = data.offset() * width;
                let Some(values) = values.as_slice().get(start..start + data.len() * width) else {
                    return false;
                };
                under(
                    indices.filter_map(|i| values.get(i * width..(i + 1) * width)),
                    limit,
                )
            }
            _ => false,
        },
    }
}

fn under<'a>(values: impl Iterator<Item = &'a [u8]>, limit: usize) -> bool {
    let mut seen = HashSet::with_capacity(limit + 1);
    for value in values {
        seen.insert(value);
        if seen.len() > limit {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn batch(schema: &SchemaRef, from: i64, rows: i64) -> RecordBatch {
        let ids = Int64Array::from_iter_values(from..from + rows);
        let regions = StringArray::from_iter_values((from..from + rows).map(|i| format!("region-{}", i % 7)));
        RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(regions)]).expect("batch")
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("region", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn low_cardinality_detects_repeated_values_only() {
        let repeated = StringArray::from_iter_values((0..1000).map(|i| format!("r{}", i % 10)));
        let unique = Int64Array::from_iter_values(0..1000);
        assert!(low_cardinality(&repeated));
        assert!(!low_cardinality(&unique));
        assert!(low_cardinality(&Int64Array::from_iter_values(
            (0..1000).map(|i| i % 3)
        )));
    }

    #[tokio::test]
    async fn small_results_are_one_put_and_large_ones_several_parts() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cancel = CancellationToken::new();
        let options = SinkOptions {
            part_size: 64 * 1024,
            row_group_rows: 50_000,
            ..SinkOptions::default()
        };

        let small = Path::from("small.parquet");
        let mut sink = ParquetSink::new(store.clone(), small.clone(), schema(), options.clone());
        sink.write(&batch(&schema(), 0, 10), &cancel)
            .await
            .expect("write");
        let output = sink.finish(&cancel, || async { true }).await.expect("finish");
        assert_eq!((output.rows, output.parts, output.row_groups), (10, 0, 1));

        let large = Path::from("large.parquet");
        let mut sink = ParquetSink::new(store.clone(), large.clone(), schema(), options);
        for i in 0..20 {
            sink.write(&batch(&schema(), i * 10_000, 10_000), &cancel)
                .await
                .expect("write");
        }
        let output = sink.finish(&cancel, || async { true }).await.expect("finish");
        assert_eq!(output.rows, 200_000);
        assert!(output.parts > 1, "{output:?}");
        assert_eq!(output.row_groups, 4);
        let bytes = store
            .get(&large)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(bytes.len() as u64, output.bytes);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("reader")
            .build()
            .expect("build");
        let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
        assert_eq!(rows, 200_000);
    }

    #[tokio::test]
    async fn a_refused_fence_leaves_no_object() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cancel = CancellationToken::new();
        let options = SinkOptions {
            part_size: 16 * 1024,
            ..SinkOptions::default()
        };
        let mut sink = ParquetSink::new(store.clone(), Path::from("fenced.parquet"), schema(), options);
        sink.write(&batch(&schema(), 0, 50_000), &cancel)
            .await
            .expect("write");
        let error = sink
            .finish(&cancel, || async { false })
            .await
            .expect_err("fenced");
        assert!(matches!(error, SinkError::Fenced));
        let listed: Vec<_> = store.list(None).try_collect().await.expect("list");
        assert!(listed.is_empty(), "{listed:?}");
    }

    #[tokio::test]
    async fn an_empty_result_is_a_valid_file_with_the_schema() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("empty.parquet");
        let sink = ParquetSink::new(store.clone(), path.clone(), schema(), SinkOptions::default());
        let output = sink
            .finish(&CancellationToken::new(), || async { true })
            .await
            .expect("finish");
        assert_eq!((output.rows, output.row_groups), (0, 0));
        let bytes = store.get(&path).await.expect("get").bytes().await.expect("bytes");
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("reader");
        assert_eq!(builder.schema().fields().len(), 2);
    }
}
