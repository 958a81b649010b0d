//! Pagination shared by every paginated list.

use serde::{Deserialize, Serialize};
use strum::IntoStaticStr;

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "UPPERCASE")]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

impl SortOrder {
    /// The SQL keyword: `ASC` or `DESC`.
    pub fn sql(self) -> &'static str {
        self.into()
    }
}

/// A validated page request: `page` ≥ 1, `limit` in 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub limit: u32,
}

impl PageRequest {
    pub const MAX_LIMIT: u32 = 100;

    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.limit)
    }
}

/// One page of results and the total count across all pages.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub request: PageRequest,
}

impl<T> Page<T> {
    pub fn total_pages(&self) -> i64 {
        let limit = i64::from(self.request.limit);
        (self.total + limit - 1) / limit
    }

    pub fn has_next(&self) -> bool {
        i64::from(self.request.page) < self.total_pages()
    }

    pub fn has_prev(&self) -> bool {
        self.request.page > 1
    }
}
