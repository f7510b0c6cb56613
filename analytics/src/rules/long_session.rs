//! Abnormally long washes and flushes, against the device's own recent ones.
//!
//! Each toilet learns the median and spread (1.4826 × MAD) of its last washes and
//! flushes. A session is long when it exceeds `median + k·σ`, `min_ratio × median`
//! and `median + min_extra_s` together; long sessions are not learnt. The condition
//! clears at the next normal session of the same kind.

use protocol::message::SessionKind;
use serde::{Deserialize, Serialize};

use super::config::RulesConfig;
use super::stats::SampleWindow;

/// Long-session state of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LongSessions {
    washes_s: SampleWindow<24>,
    flushes_s: SampleWindow<24>,
    /// Kind of the session that raised the condition.
    flagged: Option<SessionKind>,
    /// Duration, median and threshold of the last judged session, seconds.
    last: (f32, f32, f32),
}

impl LongSessions {
    /// Duration, baseline median and threshold of the last judged session, seconds.
    pub fn last_judged(&self) -> (f32, f32, f32) {
        self.last
    }

    /// A session of `kind` lasted `duration_s`. `skip` leaves it out entirely (the
    /// device already reports a stuck valve). Returns `Some(present)` on a verdict.
    pub fn on_session(
        &mut self,
        cfg: &RulesConfig,
        kind: SessionKind,
        duration_s: u32,
        skip: bool,
    ) -> Option<bool> {
        let window = match kind {
            SessionKind::Wash => &mut self.washes_s,
            SessionKind::Flush => &mut self.flushes_s,
            _ => return None,
        };
        if skip {
            return None;
        }
        let d = duration_s as f32;
        let verdict = match window.summary() {
            Some(base) if base.count >= usize::from(cfg.long_session_min_samples) => {
                let threshold = (base.median + cfg.long_session_k * base.sigma.max(1.0))
                    .max(base.median * cfg.long_session_min_ratio)
                    .max(base.median + cfg.long_session_min_extra_s);
                self.last = (d, base.median, threshold);
                Some(d > threshold)
            }
            _ => None,
        };
        if verdict != Some(true) {
            window.push(d);
        }
        match (verdict, self.flagged) {
            (Some(true), None) => {
                self.flagged = Some(kind);
                Some(true)
            }
            (Some(false), Some(k)) if k == kind => {
                self.flagged = None;
                Some(false)
            }
            _ => None,
        }
    }
}
