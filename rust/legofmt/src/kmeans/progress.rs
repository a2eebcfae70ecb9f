//! Progress reports: what [`fit`](super::fit) tells its callback ([`Progress`], with the
//! [`ProgressStage`] it comes from), and the throttle that decides when to call it
//! ([`ProgressThrottle`]).
//!
//! The stages report their work as they go (points assigned, centroids chosen) together with
//! its cost in multiply-adds; the throttle passes a report on to the callback only once
//! [`WORK_PER_REPORT`] multiply-adds have piled up since the last call, so that the callback
//! costs nothing measurable however small the steps are, and at the end of every stage and
//! every iteration of the sample phase and of Lloyd. A callback that returns `false` cancels
//! the fit: the throttle turns the answer into [`LgnError::Cancelled`].

use crate::error::{LgnError, Result};

/// The stage a [`Progress`] report comes from, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgressStage {
    /// Choosing the initial centroids; `done`/`total` count centroids.
    Init,
    /// The sample phase (Lloyd iterations with momentum on nested random samples);
    /// `done`/`total` count points assigned (`total` is the `max_iter * n` budget, an upper
    /// bound).
    Samples,
    /// Full-data Lloyd iterations; `done`/`total` count points over all planned iterations.
    Lloyd,
    /// The final assignment of every point; `done`/`total` count points.
    Assign,
}

impl ProgressStage {
    /// The stage's name in lower case: `"init"`, `"samples"`, `"lloyd"` or `"assign"`.
    pub fn name(self) -> &'static str {
        match self {
            ProgressStage::Init => "init",
            ProgressStage::Samples => "samples",
            ProgressStage::Lloyd => "lloyd",
            ProgressStage::Assign => "assign",
        }
    }
}

/// A progress report passed to the callback of [`fit`](super::fit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Which stage is running.
    pub stage: ProgressStage,
    /// Work done so far in this stage (units depend on the stage).
    pub done: usize,
    /// Work planned for this stage (an upper bound where the stage can stop early).
    pub total: usize,
    /// Sum of squared distances, when one was just measured: the full inertia after a Lloyd
    /// pass or the final assignment, an estimate (the sample's inertia times `n / sample size`)
    /// after each iteration of the sample phase.
    pub inertia: Option<f64>,
}

/// Work (multiply-adds) between two calls of the callback.
const WORK_PER_REPORT: u64 = 1 << 26;

/// Calls the user's progress callback every [`WORK_PER_REPORT`] units of work (and whenever
/// asked to report now), turning a `false` answer into [`LgnError::Cancelled`].
pub(crate) struct ProgressThrottle<'a> {
    callback: &'a (dyn Fn(&Progress) -> bool + Sync),
    pending: u64,
}

impl<'a> ProgressThrottle<'a> {
    /// A throttle in front of `callback`, with no work pending.
    pub(crate) fn new(callback: &'a (dyn Fn(&Progress) -> bool + Sync)) -> Self {
        ProgressThrottle {
            callback,
            pending: 0,
        }
    }

    /// Records `work` units done; reports `p` if enough work has piled up since the last call.
    pub(crate) fn tick(&mut self, p: Progress, work: u64) -> Result<()> {
        self.pending = self.pending.saturating_add(work);
        if self.pending >= WORK_PER_REPORT {
            self.report_now(p)
        } else {
            Ok(())
        }
    }

    /// Reports `p` now.
    pub(crate) fn report_now(&mut self, p: Progress) -> Result<()> {
        self.pending = 0;
        if (self.callback)(&p) {
            Ok(())
        } else {
            Err(LgnError::Cancelled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_the_progress_words() {
        // compress prints a stage by its name: the Python progress line parses these words.
        let stages = [
            ProgressStage::Init,
            ProgressStage::Samples,
            ProgressStage::Lloyd,
            ProgressStage::Assign,
        ];
        let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["init", "samples", "lloyd", "assign"]);
    }

    #[test]
    fn throttle_reports_after_enough_work_and_cancels_on_false() {
        let calls = std::sync::Mutex::new(0usize);
        let cb = |_: &Progress| {
            *calls.lock().unwrap() += 1;
            true
        };
        let p = Progress {
            stage: ProgressStage::Init,
            done: 0,
            total: 1,
            inertia: None,
        };
        let mut t = ProgressThrottle::new(&cb);
        t.tick(p, WORK_PER_REPORT - 1).unwrap();
        assert_eq!(*calls.lock().unwrap(), 0);
        t.tick(p, 1).unwrap();
        assert_eq!(*calls.lock().unwrap(), 1);
        t.report_now(p).unwrap();
        assert_eq!(*calls.lock().unwrap(), 2);
        let no = |_: &Progress| false;
        let mut t = ProgressThrottle::new(&no);
        assert!(matches!(t.report_now(p), Err(LgnError::Cancelled)));
    }
}
