//! `transform` steps: SQL over the Parquet results of earlier steps of the
//! same execution, run by DataFusion straight from object storage and
//! streamed into the step's own result. Names, memory and the join
//! strategy are explained in `design.md` beside this file.

mod engine;
mod errors;
mod tables;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, TableReference};
use datafusion::config::Dialect;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use datafusion::scalar::ScalarValue;
use ferry_shared::domain::params::{self, ParamValue, Placeholder};
use ferry_shared::domain::{ErrorKind, Execution, StepRun};
use ferry_shared::objects::ObjectTarget;
use ferry_shared::steps::transform::TransformConfig;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::engine::{Engine, LazyEngine, TransformArgs, TransformOptions, parse_size};
use self::errors::{Failure, exhausted, step_error};
use crate::extract::{
    Cancellable, Destination, ExtractError, ExtractOptions, Output, ReadPath, StepOutput, StepRead,
    run_step_with,
};

/// One `transform` step of `execution`.
pub struct Transform<'a> {
    /// Where the execution's step results are.
    pub objects: &'a ObjectTarget,
    /// The execution as it stands when the step starts: earlier steps'
    /// statuses and result objects.
    pub execution: &'a Execution,
    pub step: &'a StepRun,
    /// The step's config (`query`, `parameters?`).
    pub config: &'a Map<String, Value>,
    /// The ids of the earlier steps the transform reads (the step's
    /// `dependencies`); empty: every earlier step.
    pub dependencies: &'a [String],
}

impl<'a> Transform<'a> {
    /// The transform as a step read on `engine`, for the step runner.
    pub fn on<'t>(&'t self, engine: &'t Engine) -> OnEngine<'t, 'a> {
        OnEngine {
            transform: self,
            engine,
        }
    }

    /// Runs the transform on `engine` and writes its result as Parquet to
    /// `destination` (as a worker's job does, without progress reports or a
    /// lease to confirm): for tests and benchmarks.
    pub async fn run(
        &self,
        engine: &Engine,
        destination: &Destination<'_>,
        cancel: &CancellationToken,
    ) -> Result<StepOutput, ExtractError> {
        run_step_with(
            &ExtractOptions::default(),
            &self.on(engine),
            destination,
            &|_, _| {},
            cancel,
            || async { true },
        )
        .await
    }

    /// Plans the query and streams its batches into `out`. A plan with hash
    /// joins that runs out of memory runs again from the start with
    /// sort-merge joins (nothing written so far is kept).
    async fn read_on(&self, engine: &Engine, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        let config = TransformConfig::parse(self.config)
            .map_err(|e| ExtractError::new(ErrorKind::InvalidConfig, e.to_string()))?;
        let bound = params::bind(
            &config.query,
            config.declared(),
            &self.execution.parameters,
            Placeholder::Dollar,
        )
        .map_err(|e| ExtractError::new(ErrorKind::InvalidParameters, e.to_string()))?;
        let values: Vec<ScalarValue> = bound.params.iter().map(scalar).collect();
        let mut hash_join = engine.options().hash_join;
        loop {
            match self.attempt(engine, &bound.sql, &values, hash_join, out).await {
                Ok(()) => return Ok(ReadPath::Transform),
                Err(Failure::Other(error)) => return Err(error),
                Err(Failure::Memory(error)) if hash_join => {
                    // `attempt` reports memory as retryable only for plans
                    // that had a hash join.
                    tracing::info!(
                        step_id = %self.step.step_id,
                        error = %error.strip_backtrace(),
                        "a hash join ran out of memory; running the transform again with sort-merge joins"
                    );
                    out.restart().await;
                    engine.count_rerun();
                    hash_join = false;
                }
                Err(Failure::Memory(error)) => {
                    return Err(exhausted(&error, engine.options().memory_limit));
                }
            }
        }
    }

    /// One run of the query. Memory running out is [`Failure::Memory`]
    /// only when `hash_join` is set and the plan has a hash join (running
    /// again with sort-merge joins may then fit).
    async fn attempt(
        &self,
        engine: &Engine,
        sql: &str,
        values: &[ScalarValue],
        hash_join: bool,
        out: &mut Output<'_>,
    ) -> Result<(), Failure> {
        let mut cancel = Cancellable::new(out.cancel());
        let ctx = engine.session(self.objects, hash_join)?;
        let plan = cancel.run(self.plan(&ctx, sql, values)).await??;
        let with_hash_join = hash_join && has_hash_join(plan.as_ref());
        let memory = |error: Failure| match error {
            Failure::Memory(error) if !with_hash_join => {
                Failure::Other(exhausted(&error, engine.options().memory_limit))
            }
            other => other,
        };
        let (fields, casts) = output_fields(&plan.schema());
        let schema = out.start(fields)?;
        // The query runs on the engine's threads and hands its batches over
        // here, where they are written; dropping `running` stops it.
        let (batches, mut received) = tokio::sync::mpsc::channel(2);
        let mut running = Running(engine.spawn(execute(plan, ctx.task_ctx(), batches)));
        while let Some(batch) = cancel.run(received.recv()).await? {
            let batch = batch.map_err(|e| memory(e.into()))?;
            out.write(conform(&schema, &casts, batch)?).await?;
        }
        running.finished().await
    }

    /// Parses the query, checks and registers the tables it reads, and
    /// plans it with the parameters' values in place.
    async fn plan(
        &self,
        ctx: &SessionContext,
        sql: &str,
        values: &[ScalarValue],
    ) -> Result<Arc<dyn ExecutionPlan>, Failure> {
        let state = ctx.state();
        let statement = state.sql_to_statement(sql, &Dialect::Generic)?;
        let mut reads: BTreeMap<String, &StepRun> = BTreeMap::new();
        for reference in state.resolve_table_references(&statement)? {
            let in_default_schema = reference.catalog().is_none_or(|c| c == "datafusion")
                && reference.schema().is_none_or(|s| s == "public");
            if !in_default_schema || reads.contains_key(reference.table()) {
                continue;
            }
            let name = reference.table();
            let Some(step) = tables::named(self.execution, self.step, name) else {
                continue;
            };
            let step = step?;
            tables::readable(step, self.step, self.dependencies, name)?;
            reads.insert(name.to_owned(), step);
        }
        for (name, step) in &reads {
            self.register(ctx, name, step).await?;
        }
        let plan = state.statement_to_plan(statement).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let frame = if values.is_empty() {
            frame
        } else {
            frame.with_param_values(ParamValues::from(values.to_vec()))?
        };
        Ok(frame.create_physical_plan().await?)
    }

    /// Registers `step`'s result object as table `name`.
    async fn register(&self, ctx: &SessionContext, name: &str, step: &StepRun) -> Result<(), Failure> {
        let url = step.output_file.as_deref().unwrap_or_default();
        let Some(path) = self.objects.path_of(url) else {
            return Err(Failure::Other(ExtractError::new(
                ErrorKind::NotFound,
                format!(
                    "the result of {} ({url}) is not in this worker's object store",
                    tables::describe(step)
                ),
            )));
        };
        match self.objects.store.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Failure::Other(ExtractError::new(
                    ErrorKind::NotFound,
                    format!(
                        "the result of {} is missing from object storage: {url}",
                        tables::describe(step)
                    ),
                )));
            }
            Err(error) => {
                return Err(Failure::Other(ExtractError::new(
                    ErrorKind::ConnectionFailed,
                    format!(
                        "reading the result of {} from object storage failed: {error}",
                        tables::describe(step)
                    ),
                )));
            }
        }
        let location = format!("{}/{path}", engine::RESULTS_URL);
        ctx.register_parquet(
            TableReference::bare(name.to_owned()),
            location,
            ParquetReadOptions::default(),
        )
        .await
        .map_err(|e| Failure::Other(step_error(e)))
    }
}

/// A transform run on a given engine.
/// A transform and the engine it runs on: what [`Transform::on`] gives.
pub struct OnEngine<'t, 'a> {
    transform: &'t Transform<'a>,
    engine: &'t Engine,
}

#[async_trait::async_trait]
impl StepRead for OnEngine<'_, '_> {
    async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        self.transform.read_on(self.engine, out).await
    }
}

/// Runs `plan` and sends its batches, then ends (after an error, after
/// the last batch, or when nobody receives any more).
async fn execute(
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    batches: mpsc::Sender<Result<RecordBatch, DataFusionError>>,
) {
    let mut stream = match datafusion::physical_plan::execute_stream(plan, task) {
        Ok(stream) => stream,
        Err(error) => {
            let _ = batches.send(Err(error)).await;
            return;
        }
    };
    while let Some(batch) = stream.next().await {
        let failed = batch.is_err();
        if batches.send(batch).await.is_err() || failed {
            return;
        }
    }
}

/// The task running a query on the engine; aborted when dropped.
struct Running(Option<JoinHandle<()>>);

impl Running {
    /// Whether the query ran to its end (rather than panicking).
    async fn finished(&mut self) -> Result<(), Failure> {
        let Some(task) = self.0.take() else {
            return Err(Failure::Other(ExtractError::internal(
                "the transform engine has stopped",
            )));
        };
        task.await
            .map_err(|e| Failure::Other(ExtractError::internal_from("the transform engine failed", e)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A bound parameter as the engine's literal of the same type (dates as
/// Date32, timestamps as microseconds in UTC).
fn scalar(value: &ParamValue) -> ScalarValue {
    match value {
        ParamValue::Text(text) => ScalarValue::Utf8(Some(text.clone())),
        ParamValue::Integer(n) => ScalarValue::Int64(Some(*n)),
        ParamValue::Number(n) => ScalarValue::Float64(Some(*n)),
        ParamValue::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        ParamValue::Date(date) => {
            let days = date
                .signed_duration_since(chrono::NaiveDate::default())
                .num_days();
            ScalarValue::Date32(i32::try_from(days).ok())
        }
        ParamValue::Timestamp(at) => {
            ScalarValue::TimestampMicrosecond(Some(at.timestamp_micros()), Some("UTC".into()))
        }
    }
}

/// Whether `plan` joins with a hash table anywhere.
fn has_hash_join(plan: &dyn ExecutionPlan) -> bool {
    plan.name() == "HashJoinExec" || plan.children().iter().any(|child| has_hash_join(child.as_ref()))
}

/// The result's columns as the sink writes them: nullable, and with views
/// (`Utf8View`, `BinaryView`) as their plain types, which the other steps
/// write; the indexes of columns to cast to get there.
fn output_fields(schema: &SchemaRef) -> (Vec<Field>, Vec<usize>) {
    let mut casts = Vec::new();
    let fields = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let data_type = match field.data_type() {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView => DataType::Binary,
                other => other.clone(),
            };
            if &data_type != field.data_type() {
                casts.push(i);
            }
            Field::new(field.name(), data_type, true).with_metadata(field.metadata().clone())
        })
        .collect();
    (fields, casts)
}

/// `batch` with the sink's schema (names made unique, views cast).
fn conform(schema: &SchemaRef, casts: &[usize], batch: RecordBatch) -> Result<RecordBatch, ExtractError> {
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for &i in casts {
        columns[i] = arrow::compute::cast(&columns[i], schema.field(i).data_type())
            .map_err(|e| ExtractError::internal_from("converting a result column failed", e))?;
    }
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| ExtractError::internal_from("the result's columns do not match its schema", e))
}
