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
    flushes_s: SampleWindow<12>,
    /// Kind of the session that raised the condition.
    flagged: Option<SessionKind>,
}

/// Judges a session of `d` seconds against `window` (when warm), then learns it unless
/// long. Returns (long, median, threshold).
fn judge<const N: usize>(
    cfg: &RulesConfig,
    window: &mut SampleWindow<N>,
    d: f32,
) -> Option<(bool, f32, f32)> {
    let judged = window
        .summary()
        .filter(|base| base.count >= usize::from(cfg.long_session_min_samples))
        .map(|base| {
            let sigma = base
                .sigma
                .max(cfg.long_session_sigma_floor_ratio * base.median)
                .max(1.0);
            let threshold = (base.median + cfg.long_session_k * sigma)
                .max(base.median * cfg.long_session_min_ratio)
                .max(base.median + cfg.long_session_min_extra_s);
            (d > threshold, base.median, threshold)
        });
    if !judged.is_some_and(|(long, _, _)| long) {
        window.push(d);
    }
    judged
}

impl LongSessions {
    /// A session of `kind` lasted `duration_s`. `skip` leaves it out entirely (the
    /// device already reports a stuck valve). Returns `Some((present, (duration,
    /// baseline median, threshold)))`, seconds, when the verdict changes.
    pub fn on_session(
        &mut self,
        cfg: &RulesConfig,
        kind: SessionKind,
        duration_s: u32,
        skip: bool,
    ) -> Option<(bool, (f32, f32, f32))> {
        if skip {
            return None;
        }
        let d = duration_s as f32;
        let judged = match kind {
            SessionKind::Wash => judge(cfg, &mut self.washes_s, d),
            SessionKind::Flush => judge(cfg, &mut self.flushes_s, d),
            _ => return None,
        };
        let (long, median, threshold) = judged?;
        let figures = (d, median, threshold);
        match (long, self.flagged) {
            (true, None) => {
                self.flagged = Some(kind);
                Some((true, figures))
            }
            (false, Some(k)) if k == kind => {
                self.flagged = None;
                Some((false, figures))
            }
            _ => None,
        }
    }
}
