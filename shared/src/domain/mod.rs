//! Domain types shared by every role. Pure data and validation: no I/O.

pub mod access;
pub mod connector;
pub mod error_kind;
pub mod execution;
pub mod page;
pub mod params;
pub mod project;
pub mod schedule;
pub mod step;
pub mod webhook;
pub(crate) mod word;

pub use access::{OrgRole, Permissions, Principal, ResourceKind, Role};
pub use connector::{
    Connector, ConnectorListQuery, ConnectorStatus, ConnectorUsage, Sealed, TestFailure, TestOutcome,
    TestRecord, TestStatus,
};
pub use error_kind::ErrorKind;
pub use execution::{Execution, ExecutionStatus, Lease, StepError, StepRun, StepRunStatus, Trigger};
pub use page::{Page, PageRequest, SortOrder};
pub use project::{
    NewProject, Project, ProjectListQuery, ProjectPatch, ProjectSort, ProjectStatus, ProjectSummary,
};
pub use schedule::Schedule;
pub use step::{NewStep, Step, StepPatch, StepType};

use chrono::{DateTime, SubsecRound, Utc};

/// The current time, truncated to microseconds so that it survives a round
/// trip through either metadata backend unchanged.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
