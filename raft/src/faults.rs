//! Network faults injected into outgoing cluster RPC, for the chaos tests.
//!
//! Off unless a node runs with `debug.fault_injection = true` and someone sets faults through
//! `PUT /v1/debug/net`. Every outgoing request passes [`before_send`]: a request to a dropped
//! address is lost (the caller sees its own timeout expire, as with a real partition), a
//! lossy link loses that share of requests the same way, and a delay holds each request back.
//! Partitions are set on both sides by the harness; one side only gives a one-way partition.
//!
//! The filter is compiled in every build and inert until set at run time, so the binary the
//! chaos tests exercise is the binary users run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

pub use edgerun_model::NetFaults;

static FAULTS: RwLock<Option<NetFaults>> = RwLock::new(None);
static SENT: AtomicU64 = AtomicU64::new(0);

/// Replace the faults (an empty value heals everything).
pub fn set(faults: NetFaults) {
    let mut f = FAULTS.write().unwrap_or_else(|p| p.into_inner());
    *f = if faults.is_clear() {
        None
    } else {
        Some(faults)
    };
}

/// The faults in force.
pub fn current() -> NetFaults {
    FAULTS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// What happens to one request to `addr`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Send,
    Delay(Duration),
    Lose,
}

pub(crate) fn verdict(addr: &str) -> Verdict {
    let guard = FAULTS.read().unwrap_or_else(|p| p.into_inner());
    let Some(f) = guard.as_ref() else {
        return Verdict::Send;
    };
    if f.drop_to.contains(addr) {
        return Verdict::Lose;
    }
    if f.loss_percent > 0 {
        // A cheap, well-spread sequence (Weyl increment, then a multiplicative mix).
        let n = SENT
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        if (n >> 32) % 100 < u64::from(f.loss_percent) {
            return Verdict::Lose;
        }
    }
    if f.delay_ms > 0 {
        return Verdict::Delay(Duration::from_millis(f.delay_ms));
    }
    Verdict::Send
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test touches the process-wide filter, so the cases cannot race each other.
    #[test]
    fn drop_loss_delay_and_heal() {
        assert_eq!(verdict("10.0.0.2:7200"), Verdict::Send);
        set(NetFaults {
            drop_to: ["10.0.0.2:7200".to_string()].into(),
            ..NetFaults::default()
        });
        assert_eq!(verdict("10.0.0.2:7200"), Verdict::Lose);
        assert_eq!(verdict("10.0.0.3:7200"), Verdict::Send);
        set(NetFaults {
            loss_percent: 30,
            ..NetFaults::default()
        });
        let lost = (0..10_000)
            .filter(|_| verdict("x:1") == Verdict::Lose)
            .count();
        assert!(
            (2_500..3_500).contains(&lost),
            "lost {lost} of 10000 at 30%"
        );
        set(NetFaults {
            delay_ms: 40,
            ..NetFaults::default()
        });
        assert_eq!(verdict("x:1"), Verdict::Delay(Duration::from_millis(40)));
        set(NetFaults::default());
        assert_eq!(current(), NetFaults::default());
        assert_eq!(verdict("10.0.0.2:7200"), Verdict::Send);
    }
}
