//! Identifiers: a type prefix plus a ULID (`proj_01J…`, `step_…`, `conn_…`).
//!
//! A malformed or wrongly prefixed id never matches anything: callers answer
//! 404 for it, exactly as for an id that does not exist.

use std::fmt;

/// The kinds of object Ferry names with prefixed ULIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Project,
    Step,
    Connector,
    Execution,
    Webhook,
    ApiKey,
}

impl IdKind {
    /// The prefix written before the underscore.
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Project => "proj",
            IdKind::Step => "step",
            IdKind::Connector => "conn",
            IdKind::Execution => "exec",
            IdKind::Webhook => "whk",
            IdKind::ApiKey => "key",
        }
    }

    /// A new, time-ordered id of this kind.
    pub fn generate(self) -> String {
        format!("{}_{}", self.prefix(), ulid::Ulid::new())
    }

    /// Whether `id` is this kind's prefix, an underscore and a valid ULID.
    pub fn matches(self, id: &str) -> bool {
        id.strip_prefix(self.prefix())
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|ulid| ulid.len() == 26 && ulid::Ulid::from_string(ulid).is_ok())
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_match_their_own_kind_only() {
        let id = IdKind::Project.generate();
        assert!(id.starts_with("proj_"));
        assert!(IdKind::Project.matches(&id));
        assert!(!IdKind::Step.matches(&id));
    }

    #[test]
    fn malformed_ids_do_not_match() {
        for bad in [
            "",
            "proj_",
            "proj_123",
            "proj01J0000000000000000000000",
            "PROJ_01J0000000000000000000000",
        ] {
            assert!(!IdKind::Project.matches(bad), "{bad}");
        }
        assert!(IdKind::Project.matches("proj_01J00000000000000000000000"));
    }
}
