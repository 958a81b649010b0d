//! `transform` steps: SQL over the Parquet results of earlier steps of the
//! same execution.

use ferry_shared::domain::{ErrorKind, Execution, StepRun};
use ferry_shared::objects::ObjectTarget;
use serde_json::{Map, Value};

use crate::extract::{ExtractError, Output, ReadPath, StepRead};

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
}

#[async_trait::async_trait]
impl StepRead for Transform<'_> {
    async fn read(&self, _out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        Err(ExtractError::new(
            ErrorKind::UnsupportedStepType,
            format!(
                "{} steps are not executed by this version of Ferry",
                self.step.step_type
            ),
        ))
    }
}
