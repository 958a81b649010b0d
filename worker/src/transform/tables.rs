//! Which step's result a table name of a transform's query reads, and
//! whether the transform may read it.
//!
//! A step is `step_<order>` and its name's slug (see
//! [`ferry_shared::steps::transform::slug`]). `step_<order>` names win over
//! slugs (a step named "Step 2" at order 5 is `step_5`, while `step_2` is
//! the step at order 2). A slug that several earlier steps share names none
//! of them: the query fails, naming them, and they stay readable as
//! `step_<order>`. Later steps (and the transform itself) are never
//! readable, whatever their names.

use ferry_shared::domain::{ErrorKind, Execution, StepRun, StepRunStatus};
use ferry_shared::steps::transform::{slug, table_name};

use crate::extract::ExtractError;

/// The step `name` names in `execution`, seen from the transform `this`;
/// `None` when no step has that name (the engine then reports an unknown
/// table). An ambiguous slug is an `invalid_query` error.
pub(crate) fn named<'a>(
    execution: &'a Execution,
    this: &StepRun,
    name: &str,
) -> Option<Result<&'a StepRun, ExtractError>> {
    if let Some(step) = execution.steps.iter().find(|s| table_name(s.position) == name) {
        return Some(Ok(step));
    }
    let mut earlier: Vec<&StepRun> = Vec::new();
    let mut other: Option<&StepRun> = None;
    for step in execution.steps.iter().filter(|s| slug(&s.name) == name) {
        if step.position < this.position {
            earlier.push(step);
        } else if other.is_none_or(|o| step.position < o.position) {
            other = Some(step);
        }
    }
    earlier.sort_by_key(|s| s.position);
    match earlier.as_slice() {
        [] => other.map(Ok),
        [step] => Some(Ok(*step)),
        several => Some(Err(ExtractError::new(
            ErrorKind::InvalidQuery,
            format!(
                "table `{name}` is ambiguous: it is the name of {}; use their step_<order> names",
                several
                    .iter()
                    .map(|s| describe(s))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        ))),
    }
}

/// Whether the transform `this` may read `step`, read as table `name`:
/// only an earlier step, among `dependencies` when there are any, that
/// completed with a result object.
pub(crate) fn readable(
    step: &StepRun,
    this: &StepRun,
    dependencies: &[String],
    name: &str,
) -> Result<(), ExtractError> {
    let refuse = |why: String| {
        Err(ExtractError::new(
            ErrorKind::InvalidQuery,
            format!("table `{name}` cannot be read: {} {why}", describe(step)),
        ))
    };
    if step.step_id == this.step_id {
        return refuse("is this transform itself".into());
    }
    if step.position > this.position {
        return refuse("runs after this transform; a transform reads only earlier steps' results".into());
    }
    if !dependencies.is_empty() && !dependencies.contains(&step.step_id) {
        return refuse(format!(
            "is not among this transform's dependencies ({})",
            dependencies.join(", ")
        ));
    }
    match step.status {
        StepRunStatus::Completed if step.output_file.is_some() => Ok(()),
        StepRunStatus::Completed => refuse("completed without a result object".into()),
        StepRunStatus::Failed => refuse("failed in this execution, so it has no result".into()),
        StepRunStatus::Skipped => refuse("was skipped in this execution, so it has no result".into()),
        StepRunStatus::Cancelled => refuse("was cancelled in this execution, so it has no result".into()),
        StepRunStatus::Pending | StepRunStatus::Running => {
            refuse("has not completed in this execution, so it has no result yet".into())
        }
    }
}

/// `step 2 (`Extract sales`)`.
pub(crate) fn describe(step: &StepRun) -> String {
    format!("step {} (`{}`)", step.position, step.name)
}
