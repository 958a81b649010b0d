//! The `mongo_query` runner: a `find` or `aggregate` on the connector's
//! pooled client, its documents streamed as Arrow batches to the sink.
//!
//! Columns are the documents' top-level fields, inferred from a sample: the
//! first [`SAMPLE_DOCUMENTS`] documents (fewer if they reach the batch byte
//! bound), `_id` first, the other fields in the order they first appear.
//! Each column's type is the merge of the sample's values (see
//! [`super::columns`]). The sample is written, then the rest of the cursor
//! row by row, in batches of `batch_rows` rows or `batch_bytes` bytes.
//!
//! A later document that does not fit (a value of another type, or a field
//! the sample did not have) is never dropped or coerced: the pass stops
//! writing, reads the rest of the result only to widen the columns (the
//! new field becomes a column, appended after the sample's; a disagreeing
//! value turns its column into JSON text, or an integer column into
//! Float64), the sink drops what was written, and the query runs again with
//! the widened columns. So a result is read at most twice unless the data
//! changes under it; after [`MAX_PASSES`] reads the step fails. An empty
//! result has one text column, `_id`.
//!
//! Memory stays flat: the cursor fetches at most `batch_rows` documents per
//! round trip (and the server at most 16 MiB), the sample is bounded, and
//! batches are flushed as they fill.

use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;

use arrow::datatypes::{Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use ferry_shared::domain::ErrorKind;
use ferry_shared::steps::mongo_query::MongoQuery;
use mongodb::bson::{RawDocument, RawDocumentBuf};
use mongodb::{Collection, Cursor};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::columns::{Appended, Column, Malformed, Misfit, Shape};
use super::query::{self, Command};
use super::{MongoHandle, step_error};
use crate::connectors::StepRequest;
use crate::extract::{ExtractError, Output, ReadPath};

/// Documents read before the columns are decided.
pub(crate) const SAMPLE_DOCUMENTS: usize = 1000;

/// Reads of one result before the step gives up on its changing shape.
pub(crate) const MAX_PASSES: usize = 3;

/// Distinct top-level fields a result may have.
pub(crate) const MAX_COLUMNS: usize = 2000;

/// Runs a `mongo_query` step on `handle`'s client.
pub(crate) async fn run(
    handle: &MongoHandle,
    step: &StepRequest<'_>,
    out: &mut Output<'_>,
) -> Result<ReadPath, ExtractError> {
    let config = MongoQuery::parse(step.config).map_err(|error| match error {
        ferry_shared::Error::Validation { field, message, .. } => ExtractError::new(
            ErrorKind::InvalidQuery,
            format!("{}: {message}", field.unwrap_or_else(|| "config".into())),
        ),
        other => ExtractError::new(ErrorKind::InvalidQuery, other.to_string()),
    })?;
    let command = query::bind(&config, step)?;
    let collection = handle
        .client
        .database(&handle.database)
        .collection::<RawDocumentBuf>(&config.collection);
    let batch = u32::try_from(out.options().batch_rows.clamp(1, 16 * 1024)).unwrap_or(1024);
    let mut layout = Layout::default();
    for pass in 1..=MAX_PASSES {
        let mut waiter = Waiter::new(out.cancel());
        let cursor = waiter
            .run(open(&collection, &command, handle, batch))
            .await?
            .map_err(|error| step_error(&error, &handle.secrets))?;
        handle.check_opened(step.policy).await?;
        match read_pass(cursor, out, &mut waiter, handle, layout.clone()).await? {
            None => return Ok(ReadPath::MongoDb),
            Some(wider) => {
                tracing::info!(
                    pass,
                    columns = wider.fields.len(),
                    "a document does not fit the inferred columns; reading again with them widened"
                );
                out.restart().await;
                layout = wider;
            }
        }
    }
    Err(ExtractError::new(
        ErrorKind::InvalidQuery,
        format!(
            "the documents kept changing shape while they were read ({MAX_PASSES} reads); retry the step or project fewer fields"
        ),
    ))
}

async fn open(
    collection: &Collection<RawDocumentBuf>,
    command: &Command,
    handle: &MongoHandle,
    batch: u32,
) -> mongodb::error::Result<Cursor<RawDocumentBuf>> {
    match command {
        Command::Find {
            filter,
            projection,
            limit,
        } => {
            let mut find = collection
                .find(filter.clone())
                .batch_size(batch)
                .max_time(handle.statement_timeout);
            if let Some(projection) = projection {
                find = find.projection(projection.clone());
            }
            if let Some(limit) = limit {
                find = find.limit(*limit);
            }
            find.await
        }
        Command::Aggregate { pipeline } => {
            collection
                .aggregate(pipeline.clone())
                .batch_size(batch)
                .max_time(handle.statement_timeout)
                .with_type::<RawDocumentBuf>()
                .await
        }
    }
}

/// One read of the result. `Some(layout)` asks for another read with the
/// wider columns `layout` describes.
async fn read_pass(
    mut cursor: Cursor<RawDocumentBuf>,
    out: &mut Output<'_>,
    waiter: &mut Waiter<'_>,
    handle: &MongoHandle,
    mut layout: Layout,
) -> Result<Option<Layout>, ExtractError> {
    let options = out.options();
    let mut sample = Vec::new();
    let mut sample_bytes = 0;
    let mut more = true;
    while sample.len() < SAMPLE_DOCUMENTS && sample_bytes < options.batch_bytes {
        if !waiter.advance(&mut cursor, handle).await? {
            more = false;
            break;
        }
        let document = cursor.current();
        layout.absorb(document)?;
        sample_bytes += document.as_bytes().len();
        sample.push(document.to_raw_document_buf());
    }
    let shapes = layout.settled();
    let schema = out.start(
        shapes
            .iter()
            .map(|(name, shape)| Field::new(name, shape.data_type(), true))
            .collect(),
    )?;
    let mut rows = Rows::new(schema, &shapes);
    for document in sample.drain(..) {
        match rows.append(&document) {
            Ok(()) => {}
            Err(Appended::Malformed(error)) => return Err(malformed(error)),
            Err(Appended::Misfit(_)) => {
                return Err(ExtractError::internal(
                    "a sampled document does not fit the columns inferred from it",
                ));
            }
        }
        if rows.full(options.batch_rows, options.batch_bytes) {
            out.write(rows.finish()?).await?;
        }
    }
    while more && waiter.advance(&mut cursor, handle).await? {
        let document = cursor.current();
        match rows.append(document) {
            Ok(()) => {}
            Err(Appended::Malformed(error)) => return Err(malformed(error)),
            Err(Appended::Misfit(_)) => {
                // Nothing is written from here on: the rest of the result
                // only widens the columns for the next read.
                layout.absorb(document)?;
                while waiter.advance(&mut cursor, handle).await? {
                    layout.absorb(cursor.current())?;
                }
                return Ok(Some(layout));
            }
        }
        if rows.full(options.batch_rows, options.batch_bytes) {
            out.write(rows.finish()?).await?;
        }
    }
    if rows.rows > 0 {
        out.write(rows.finish()?).await?;
    }
    Ok(None)
}

/// The top-level fields seen so far, in order of first appearance.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    fields: Vec<(String, Shape)>,
    index: HashMap<String, usize>,
}

impl Layout {
    pub(crate) fn absorb(&mut self, document: &RawDocument) -> Result<(), ExtractError> {
        for element in document {
            let (key, value) = element.map_err(|error| malformed(error.into()))?;
            let index = match self.index.get(key) {
                Some(&index) => index,
                None => {
                    if self.fields.len() >= MAX_COLUMNS {
                        return Err(ExtractError::new(
                            ErrorKind::InvalidQuery,
                            format!(
                                "the documents have more than {MAX_COLUMNS} distinct top-level fields; project fewer fields"
                            ),
                        ));
                    }
                    self.fields.push((key.to_owned(), Shape::Null));
                    self.index.insert(key.to_owned(), self.fields.len() - 1);
                    self.fields.len() - 1
                }
            };
            self.fields[index].1.absorb(value, 1).map_err(malformed)?;
        }
        Ok(())
    }

    /// The columns to write: `_id` first, then the others in order; `_id`
    /// alone (text) when nothing was seen.
    pub(crate) fn settled(&self) -> Vec<(String, Shape)> {
        let mut columns: Vec<(String, Shape)> = self
            .fields
            .iter()
            .map(|(name, shape)| (name.clone(), shape.settled()))
            .collect();
        match columns.iter().position(|(name, _)| name == "_id") {
            Some(0) => {}
            Some(index) => {
                let id = columns.remove(index);
                columns.insert(0, id);
            }
            None if columns.is_empty() => columns.push(("_id".into(), Shape::Text)),
            None => {}
        }
        columns
    }
}

/// The rows of the batch being built.
pub(crate) struct Rows {
    schema: SchemaRef,
    names: Vec<String>,
    index: HashMap<String, usize>,
    columns: Vec<Column>,
    rows: usize,
    bytes: usize,
}

impl Rows {
    pub(crate) fn new(schema: SchemaRef, shapes: &[(String, Shape)]) -> Rows {
        let names: Vec<String> = shapes.iter().map(|(name, _)| name.clone()).collect();
        Rows {
            schema,
            index: names
                .iter()
                .enumerate()
                .map(|(i, name)| (name.clone(), i))
                .collect(),
            names,
            columns: shapes.iter().map(|(_, shape)| Column::new(shape)).collect(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Appends one document as a row; a field without a column, or a value
    /// its column cannot hold, is a misfit (the rows are then unusable).
    pub(crate) fn append(&mut self, document: &RawDocument) -> Result<(), Appended> {
        let row = self.rows;
        let mut hint = 0;
        for element in document {
            let (key, value) = element?;
            // Documents usually keep one field order: try the next column first.
            let index = match self.names.get(hint) {
                Some(name) if name == key => hint,
                _ => *self.index.get(key).ok_or(Appended::Misfit(Misfit))?,
            };
            hint = index + 1;
            let column = &mut self.columns[index];
            if column.len() > row {
                continue;
            }
            column.append(value)?;
        }
        for column in &mut self.columns {
            if column.len() == row {
                column.append_null();
            }
        }
        self.rows += 1;
        self.bytes += document.as_bytes().len();
        Ok(())
    }

    fn full(&self, batch_rows: usize, batch_bytes: usize) -> bool {
        self.rows >= batch_rows || self.bytes >= batch_bytes
    }

    /// The rows so far as a batch; the builders start over.
    pub(crate) fn finish(&mut self) -> Result<RecordBatch, ExtractError> {
        let arrays = self.columns.iter_mut().map(Column::finish).collect();
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|error| ExtractError::internal_from("building a record batch failed", error))
    }
}

fn malformed(error: Malformed) -> ExtractError {
    ExtractError::new(
        ErrorKind::Internal,
        format!(
            "the MongoDB server sent a document that could not be read: {}",
            error.0
        ),
    )
}

/// Waits on the cursor and the step's cancellation together, touching the
/// cancellation only when the cursor has nothing buffered.
struct Waiter<'a> {
    cancelled: Pin<Box<WaitForCancellationFuture<'a>>>,
}

impl<'a> Waiter<'a> {
    fn new(token: &'a CancellationToken) -> Self {
        Waiter {
            cancelled: Box::pin(token.cancelled()),
        }
    }

    /// `future`'s output, or `cancelled` first.
    async fn run<T>(&mut self, future: impl Future<Output = T>) -> Result<T, ExtractError> {
        let mut future = pin!(future);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(value) = future.as_mut().poll(cx) {
                return Poll::Ready(Ok(value));
            }
            match self.cancelled.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(ExtractError::cancelled())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Moves the cursor to its next document; false at the end.
    async fn advance(
        &mut self,
        cursor: &mut Cursor<RawDocumentBuf>,
        handle: &MongoHandle,
    ) -> Result<bool, ExtractError> {
        self.run(cursor.advance())
            .await?
            .map_err(|error| step_error(&error, &handle.secrets))
    }
}

/// For tests: the columns a sequence of documents is written with.
#[cfg(test)]
pub(crate) fn layout_of(documents: &[RawDocumentBuf]) -> Vec<(String, Shape)> {
    let mut layout = Layout::default();
    for document in documents {
        layout.absorb(document).expect("absorbed");
    }
    layout.settled()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn raw(document: mongodb::bson::Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&document).expect("raw")
    }

    #[test]
    fn columns_are_the_union_of_fields_with_id_first_and_id_alone_when_empty() {
        let columns = layout_of(&[raw(doc! {"a": 1, "_id": 2}), raw(doc! {"b": "x", "a": 2.5})]);
        assert_eq!(
            columns,
            [
                ("_id".to_owned(), Shape::Int),
                ("a".to_owned(), Shape::Float),
                ("b".to_owned(), Shape::Text)
            ]
        );
        assert_eq!(layout_of(&[]), [("_id".to_owned(), Shape::Text)]);
    }
}
