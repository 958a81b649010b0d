//! What the SQL warehouse families (`bigquery/`, `databricks/`,
//! `snowflake/`) share: reading a `sql_query` step's query with its
//! `{{name}}` parameters bound, the bound of a connection test, the bound
//! of a whole step, and turning result values that arrive as text into
//! Arrow columns.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, ArrowPrimitiveType, BinaryBuilder, PrimitiveArray, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{Field, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use base64::Engine;
use ferry_shared::domain::ErrorKind;
use ferry_shared::domain::params::{self, BoundQuery, Placeholder};
use serde_json::Value;

use crate::connectors::StepRequest;
use crate::extract::ExtractError;

/// The `query` of a `sql_query` step as written, and bound: its
/// `{{name}}` placeholders written in `style`, with one value per
/// occurrence. A missing or blank query is `invalid_query`, a parameter
/// that does not bind `invalid_parameters`.
pub(crate) fn bound_query<'a>(
    step: &StepRequest<'a>,
    style: Placeholder,
) -> Result<(&'a str, BoundQuery), ExtractError> {
    let query = step
        .config
        .get("query")
        .and_then(Value::as_str)
        .filter(|query| !query.trim().is_empty())
        .ok_or_else(|| ExtractError::new(ErrorKind::InvalidQuery, "config.query is required"))?;
    let bound = params::bind(query, step.declared(), step.supplied, style)
        .map_err(|e| ExtractError::new(ErrorKind::InvalidParameters, e.to_string()))?;
    Ok((query, bound))
}

/// How long a connection test may wait for its statement within the
/// test's `budget` (`connection_timeout_seconds`): half a second less, so
/// it ends before the registry's own bound and says what happened (half
/// the budget where that leaves nothing).
pub(crate) fn test_limit(budget: Duration) -> Duration {
    budget
        .checked_sub(Duration::from_millis(500))
        .filter(|limit| !limit.is_zero())
        .unwrap_or(budget / 2)
}

/// Runs a step's `read` within `limit` (`statement_timeout_seconds`) and
/// 5 s of grace for the last page; past that the step fails with
/// `timeout`, saying that `what` ("the query", "the statement") did not
/// finish.
pub(crate) async fn within_statement_timeout(
    limit: Duration,
    what: &str,
    read: impl Future<Output = Result<(), ExtractError>>,
) -> Result<(), ExtractError> {
    match tokio::time::timeout(limit + Duration::from_secs(5), read).await {
        Ok(result) => result,
        Err(_) => Err(ExtractError::new(
            ErrorKind::Timeout,
            format!(
                "{what} did not finish within {} s (statement_timeout_seconds)",
                limit.as_secs()
            ),
        )),
    }
}

/// A result value that does not read as its column's type:
/// `unsupported_type`, naming the column.
pub(crate) fn unreadable(field: &Field) -> ExtractError {
    ExtractError::new(
        ErrorKind::UnsupportedType,
        format!(
            "column {}: a value does not read as {}",
            field.name(),
            field.data_type()
        ),
    )
}

/// Arrow cast options that refuse a value that does not convert instead
/// of writing null.
pub(crate) fn strict() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        ..CastOptions::default()
    }
}

/// Texts (null as `None`) parsed as `T`'s values (Rust's parsers, which
/// read `NaN`, `inf` and `Infinity` as floats), as `field`'s column.
pub(crate) fn parsed<'a, T>(
    field: &Field,
    texts: impl IntoIterator<Item = Option<&'a str>>,
) -> Result<ArrayRef, ExtractError>
where
    T: ArrowPrimitiveType,
    T::Native: FromStr,
{
    let array = texts
        .into_iter()
        .map(|text| text.map(str::parse::<T::Native>).transpose())
        .collect::<Result<PrimitiveArray<T>, _>>()
        .map_err(|_| unreadable(field))?;
    Ok(Arc::new(array))
}

/// Base64 texts as `field`'s binary column.
pub(crate) fn base64_binary<'a>(
    field: &Field,
    texts: impl IntoIterator<Item = Option<&'a str>>,
) -> Result<ArrayRef, ExtractError> {
    let texts = texts.into_iter();
    let mut bytes = BinaryBuilder::with_capacity(texts.size_hint().0, 0);
    for text in texts {
        match text {
            None => bytes.append_null(),
            Some(text) => bytes.append_value(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| unreadable(field))?,
            ),
        }
    }
    Ok(Arc::new(bytes.finish()))
}

/// Texts as `field`'s type (a decimal) through Arrow's strict cast.
pub(crate) fn cast_texts<'a>(
    field: &Field,
    texts: impl IntoIterator<Item = Option<&'a str>>,
) -> Result<ArrayRef, ExtractError> {
    let texts: StringArray = texts.into_iter().collect();
    cast_with_options(&texts, field.data_type(), &strict()).map_err(|_| unreadable(field))
}

/// `arrays`, one per column of `schema`, as a batch of `rows` rows.
pub(crate) fn rows_batch(
    schema: &SchemaRef,
    arrays: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch, ExtractError> {
    RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| ExtractError::internal_from("result rows do not fit their columns", e))
}

/// What the warehouse families' tests share: a `sql_query` step run on a
/// connector's pool through the real sink, and its Parquet read back.
#[cfg(test)]
pub(crate) mod testing {
    use async_trait::async_trait;
    use ferry_shared::connectors::TypeId;
    use ferry_shared::domain::StepType;
    use ferry_shared::objects::ObjectTarget;
    use object_store::ObjectStoreExt;
    use object_store::path::Path;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use reqwest::Url;
    use serde_json::{Map, Value};
    use tempfile::TempDir;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::connectors::{ConnectorPool, ConnectorSpec, Driver, NetworkPolicy};
    use crate::extract::{
        Destination, ExtractOptions, Output, ReadPath, StepOutput, StepRead, run_step_with,
    };

    /// A step read by a connector's pool.
    pub(crate) struct Run<'a> {
        pub handle: &'a dyn ConnectorPool,
        pub step: StepRequest<'a>,
    }

    #[async_trait]
    impl StepRead for Run<'_> {
        async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
            self.handle.run(&self.step, out).await
        }
    }

    /// A pool of `spec` opened by `driver` under a policy that lets it
    /// reach the tests' stand-ins on 127.0.0.1, and a results target, both
    /// in a new temporary directory (removed when dropped).
    pub(crate) async fn open_pool(
        driver: &dyn Driver,
        spec: &ConnectorSpec,
    ) -> (NetworkPolicy, ObjectTarget, Box<dyn ConnectorPool>, TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = NetworkPolicy {
            allow_private_networks: true,
            sqlite_dir: dir.path().to_path_buf(),
            trusted_roots: Default::default(),
        };
        let handle = driver.open(spec, &policy).await.expect("pool");
        let url = Url::from_directory_path(dir.path().join("results")).expect("url");
        let target = ObjectTarget::open(url.as_str()).expect("target");
        (policy, target, handle, dir)
    }

    /// Runs a `sql_query` step with `config` and execution parameters
    /// `supplied` on `handle` (a `connector` pool) into a new step path of
    /// `target`, 1000 rows a batch; the result's path and the outcome.
    pub(crate) async fn run_sql_step(
        handle: &dyn ConnectorPool,
        connector: TypeId,
        (policy, target): (&NetworkPolicy, &ObjectTarget),
        (config, supplied): (Value, Value),
        cancel: &CancellationToken,
    ) -> (Path, Result<StepOutput, ExtractError>) {
        let config: Map<String, Value> = config.as_object().cloned().expect("config");
        let supplied: Map<String, Value> = supplied.as_object().cloned().unwrap_or_default();
        let run = Run {
            handle,
            step: StepRequest {
                step_type: StepType::SqlQuery,
                connector: connector.decl(),
                config: &config,
                supplied: &supplied,
                policy,
            },
        };
        let path = target.step_path(&ferry_testkit::ulid(), "step_1");
        let options = ExtractOptions {
            batch_rows: 1000,
            ..ExtractOptions::default()
        };
        let outcome = run_step_with(
            &options,
            &run,
            &Destination::new(target, &path),
            &|_, _| {},
            cancel,
            || async { true },
        )
        .await;
        (path, outcome)
    }

    /// The Parquet object at `path` of `target` as one batch.
    pub(crate) async fn read_back(target: &ObjectTarget, path: &Path) -> RecordBatch {
        let bytes = target
            .store
            .get(path)
            .await
            .expect("object")
            .bytes()
            .await
            .expect("bytes");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        let schema = batches.first().expect("a batch").schema();
        arrow::compute::concat_batches(&schema, &batches).expect("concat")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_ends_half_a_second_before_its_budget() {
        assert_eq!(test_limit(Duration::from_secs(10)), Duration::from_millis(9_500));
        assert_eq!(test_limit(Duration::from_millis(500)), Duration::from_millis(250));
        assert_eq!(test_limit(Duration::from_millis(200)), Duration::from_millis(100));
    }

    #[test]
    fn texts_parse_as_their_columns_or_name_the_column() {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{DataType, Float64Type, Int64Type};

        let ints = Field::new("n", DataType::Int64, true);
        let array = parsed::<Int64Type>(&ints, [Some("7"), None]).expect("ints");
        assert_eq!(array.as_primitive::<Int64Type>().value(0), 7);
        assert!(array.is_null(1));
        let error = parsed::<Int64Type>(&ints, [Some("x")]).expect_err("not an int");
        assert_eq!(error.error_type, ErrorKind::UnsupportedType);
        assert_eq!(error.message, "column n: a value does not read as Int64");
        let floats = Field::new("f", DataType::Float64, true);
        let array = parsed::<Float64Type>(&floats, [Some("NaN"), Some("-inf")]).expect("floats");
        assert!(array.as_primitive::<Float64Type>().value(0).is_nan());
        let bytes = Field::new("b", DataType::Binary, true);
        let array = base64_binary(&bytes, [Some("AAE="), None]).expect("base64");
        assert_eq!(array.as_binary::<i32>().value(0), [0, 1]);
        assert!(base64_binary(&bytes, [Some("!")]).is_err());
        let amounts = Field::new("a", DataType::Decimal128(10, 2), true);
        assert!(cast_texts(&amounts, [Some("1.25"), None]).is_ok());
        assert!(cast_texts(&amounts, [Some("one")]).is_err());
    }
}
