//! Throttled progress reporting and cancellation.

use super::params::Progress;
use crate::error::{LgnError, Result};

/// Work (multiply-adds) between two progress calls, about 10-50 ms of one core.
const REPORT_WORK: u64 = 1 << 26;

/// Calls the user's progress callback every [`REPORT_WORK`] units of work (and whenever forced),
/// turning a `false` answer into [`LgnError::Cancelled`].
pub(crate) struct Reporter<'a> {
    callback: &'a (dyn Fn(&Progress) -> bool + Sync),
    pending: u64,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(callback: &'a (dyn Fn(&Progress) -> bool + Sync)) -> Self {
        Reporter {
            callback,
            pending: 0,
        }
    }

    /// Records `work` units done; reports `p` if enough work has piled up since the last call.
    pub(crate) fn tick(&mut self, p: Progress, work: u64) -> Result<()> {
        self.pending = self.pending.saturating_add(work);
        if self.pending >= REPORT_WORK {
            self.force(p)
        } else {
            Ok(())
        }
    }

    /// Reports `p` now.
    pub(crate) fn force(&mut self, p: Progress) -> Result<()> {
        self.pending = 0;
        if (self.callback)(&p) {
            Ok(())
        } else {
            Err(LgnError::Cancelled)
        }
    }
}
