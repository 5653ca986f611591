//! Fault injection: what can go wrong on Binance's side, switchable at runtime from the control
//! endpoint (`POST /_control/faults`) or from tests (`VenueHandle::inject`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One fault. Counted faults affect the next `count` matching events or requests; `symbol`
/// narrows a stream fault to one symbol (any symbol when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Depth events are generated (and in the truth) but never sent: a gap.
    DropDepth { symbol: Option<String>, count: u32 },
    /// Depth events are sent twice.
    DuplicateDepth { symbol: Option<String>, count: u32 },
    /// A depth event is held back and sent after the next one.
    ReorderDepth { symbol: Option<String>, count: u32 },
    /// Depth frames replaced by text that is not JSON.
    MalformedFrames { symbol: Option<String>, count: u32 },
    /// Depth frames cut in the middle.
    TruncatedFrames { symbol: Option<String>, count: u32 },
    /// Depth snapshots whose lastUpdateId lags the stream by `behind_events` events.
    StaleSnapshots { count: u32, behind_events: u32 },
    /// Depth snapshots answered after `delay_ms`.
    SlowSnapshots { count: u32, delay_ms: u64 },
    /// Close `count` WebSocket connections (all when absent), now.
    Disconnect { count: Option<usize> },
    /// Refuse new WebSocket connections (HTTP 503) for `for_ms`.
    RefuseConnections { for_ms: u64 },
    /// Answer the next `count` REST requests with `status` (429, 418 or 5xx).
    RestErrors { status: u16, count: u32 },
}

/// What to do with one depth frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFault {
    Drop,
    Duplicate,
    Reorder,
    Malformed,
    Truncated,
}

#[derive(Debug)]
struct Armed {
    fault: FrameFault,
    symbol: Option<String>,
    left: u32,
}

#[derive(Debug, Default)]
struct State {
    frames: Vec<Armed>,
    stale: Option<(u32, u32)>,
    slow: Option<(u32, Duration)>,
    refuse_until: Option<Instant>,
    rest: VecDeque<u16>,
}

/// The armed faults of one venue.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

impl Faults {
    /// Arms a fault. `Disconnect` is not stored: the caller acts on it.
    pub fn arm(&self, fault: &Fault) {
        let Ok(mut s) = self.state.lock() else { return };
        let mut frame = |fault: FrameFault, symbol: &Option<String>, count: u32| {
            s.frames.push(Armed {
                fault,
                symbol: symbol.as_ref().map(|x| x.to_ascii_uppercase()),
                left: count,
            });
        };
        match fault {
            Fault::DropDepth { symbol, count } => frame(FrameFault::Drop, symbol, *count),
            Fault::DuplicateDepth { symbol, count } => frame(FrameFault::Duplicate, symbol, *count),
            Fault::ReorderDepth { symbol, count } => frame(FrameFault::Reorder, symbol, *count),
            Fault::MalformedFrames { symbol, count } => {
                frame(FrameFault::Malformed, symbol, *count)
            }
            Fault::TruncatedFrames { symbol, count } => {
                frame(FrameFault::Truncated, symbol, *count)
            }
            Fault::StaleSnapshots {
                count,
                behind_events,
            } => s.stale = Some((*count, *behind_events)),
            Fault::SlowSnapshots { count, delay_ms } => {
                s.slow = Some((*count, Duration::from_millis(*delay_ms)))
            }
            Fault::RefuseConnections { for_ms } => {
                s.refuse_until = Some(Instant::now() + Duration::from_millis(*for_ms))
            }
            Fault::RestErrors { status, count } => {
                s.rest.extend(std::iter::repeat_n(*status, *count as usize))
            }
            Fault::Disconnect { .. } => {}
        }
    }

    /// Disarms everything.
    pub fn clear(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = State::default();
        }
    }

    /// The fault for the next depth frame of `symbol`, consuming one count.
    pub fn take_frame(&self, symbol: &str) -> Option<FrameFault> {
        let mut s = self.state.lock().ok()?;
        let i = s
            .frames
            .iter()
            .position(|a| a.left > 0 && a.symbol.as_deref().is_none_or(|x| x == symbol))?;
        let a = &mut s.frames[i];
        a.left -= 1;
        let f = a.fault;
        if a.left == 0 {
            s.frames.remove(i);
        }
        Some(f)
    }

    /// Whether frame faults are armed at all (the hot path skips the lock otherwise).
    pub fn any_frame_faults(&self) -> bool {
        self.state
            .lock()
            .map(|s| !s.frames.is_empty())
            .unwrap_or(false)
    }

    /// For the next snapshot: how many events to lag, and how long to wait.
    pub fn take_snapshot(&self) -> (Option<u32>, Option<Duration>) {
        let Ok(mut s) = self.state.lock() else {
            return (None, None);
        };
        let stale = s.stale.as_mut().filter(|(n, _)| *n > 0).map(|(n, behind)| {
            *n -= 1;
            *behind
        });
        let slow = s.slow.as_mut().filter(|(n, _)| *n > 0).map(|(n, d)| {
            *n -= 1;
            *d
        });
        (stale, slow)
    }

    pub fn refusing_connections(&self) -> bool {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.refuse_until)
            .is_some_and(|t| Instant::now() < t)
    }

    /// A forced status for the next REST request.
    pub fn take_rest(&self) -> Option<u16> {
        self.state.lock().ok()?.rest.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_run_out_and_respect_the_symbol() {
        let f = Faults::default();
        f.arm(&Fault::DropDepth {
            symbol: Some("btcusdt".into()),
            count: 2,
        });
        assert_eq!(f.take_frame("ETHUSDT"), None);
        assert_eq!(f.take_frame("BTCUSDT"), Some(FrameFault::Drop));
        assert_eq!(f.take_frame("BTCUSDT"), Some(FrameFault::Drop));
        assert_eq!(f.take_frame("BTCUSDT"), None);
        f.arm(&Fault::RestErrors {
            status: 503,
            count: 1,
        });
        assert_eq!(f.take_rest(), Some(503));
        assert_eq!(f.take_rest(), None);
        let json = r#"{"kind":"stale_snapshots","count":1,"behind_events":5}"#;
        let parsed: Fault = sonic_rs::from_str(json).expect("parse");
        f.arm(&parsed);
        assert_eq!(f.take_snapshot(), (Some(5), None));
        assert_eq!(f.take_snapshot(), (None, None));
    }
}
