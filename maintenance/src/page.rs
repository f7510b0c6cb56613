//! Pages of a list: every list the API serves is read `limit` rows at a time from an
//! `offset`, with a hard cap, so no answer grows with the fleet.
//!
//! The library reads one row more than asked to know whether another page follows; the
//! API answers the page as a JSON array (unchanged shape) with `X-Next-Offset` and a
//! `Link: <…>; rel="next"` header while more rows remain.

use serde::Deserialize;

/// Rows per page when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 200;
/// The most rows one page may hold.
pub const MAX_LIMIT: u32 = 1_000;
/// The furthest offset accepted (deeper pages should filter instead).
pub const MAX_OFFSET: u32 = 1_000_000;

/// Which rows of a list to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows to return, 1 to [`MAX_LIMIT`].
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// The `limit` and `offset` query parameters as sent, before checking.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct PageQuery {
    /// Rows per page.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Rows to skip.
    #[serde(default)]
    pub offset: Option<u32>,
}

/// Why a page request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// `limit` outside 1 to [`MAX_LIMIT`].
    #[error("limit must be 1 to {MAX_LIMIT}, got {0}")]
    Limit(u32),
    /// `offset` past [`MAX_OFFSET`].
    #[error("offset must be at most {MAX_OFFSET}, got {0}; filter the list instead")]
    Offset(u32),
}

impl PageQuery {
    /// The checked page.
    pub fn page(self) -> Result<Page, PageError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(PageError::Limit(limit));
        }
        let offset = self.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(PageError::Offset(offset));
        }
        Ok(Page { limit, offset })
    }
}

impl Page {
    /// `LIMIT` for the SQL query: one row more than the page, to see whether more follow.
    pub fn sql_limit(self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// `OFFSET` for the SQL query.
    pub fn sql_offset(self) -> i64 {
        i64::from(self.offset)
    }

    /// Cuts the probe row off `rows` (read with [`Page::sql_limit`]) and tells where the
    /// next page starts, if any.
    pub fn finish<T>(self, mut rows: Vec<T>) -> Paged<T> {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        Paged {
            items: rows,
            next_offset: more.then(|| self.offset.saturating_add(self.limit)),
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Where the next page starts, if more rows remain.
    pub next_offset: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_caps() {
        assert_eq!(PageQuery::default().page(), Ok(Page::default()));
        let q = |limit, offset| PageQuery {
            limit: Some(limit),
            offset: Some(offset),
        };
        assert_eq!(q(0, 0).page(), Err(PageError::Limit(0)));
        assert_eq!(
            q(MAX_LIMIT + 1, 0).page(),
            Err(PageError::Limit(MAX_LIMIT + 1))
        );
        assert_eq!(
            q(MAX_LIMIT, MAX_OFFSET + 1).page(),
            Err(PageError::Offset(MAX_OFFSET + 1))
        );
        assert_eq!(
            q(5, 10).page(),
            Ok(Page {
                limit: 5,
                offset: 10
            })
        );
    }

    #[test]
    fn the_probe_row_tells_whether_a_next_page_exists() {
        let p = Page {
            limit: 3,
            offset: 6,
        };
        assert_eq!(p.sql_limit(), 4);
        let full = p.finish(vec![1, 2, 3, 4]);
        assert_eq!(full.items, vec![1, 2, 3]);
        assert_eq!(full.next_offset, Some(9));
        let last = p.finish(vec![1, 2, 3]);
        assert_eq!(last.items, vec![1, 2, 3]);
        assert_eq!(last.next_offset, None);
    }
}
