//! A circuit breaker per peer on cluster RPC: after `failures` exchanges in a row fail
//! (cannot connect, no answer in time, broken connection), calls to that peer fail at once for
//! `cooldown`; then one call goes through as a probe (half-open): its success closes the
//! circuit, its failure opens it again. One dead peer then costs its callers nothing but a
//! fast error, instead of a connect or answer timeout each (openraft backs off on
//! `Unreachable`, heartbeats and forwarded writes move on).
//!
//! Metrics: `edgerun_rpc_circuit_open{peer}` (1 open or probing, 0 closed),
//! `edgerun_rpc_circuit_opened_total{peer}`, `edgerun_rpc_fast_failures_total{peer}`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CIRCUIT_OPEN: &str = "edgerun_rpc_circuit_open";
pub const CIRCUIT_OPENED: &str = "edgerun_rpc_circuit_opened_total";
pub const FAST_FAILURES: &str = "edgerun_rpc_fast_failures_total";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; others fail fast until it reports (or for another cooldown, if
    /// its caller went away without a word).
    Probing {
        since: Instant,
    },
}

pub struct Breaker {
    peer: String,
    /// 0 = never open.
    threshold: u32,
    cooldown: Duration,
    phase: Mutex<Phase>,
}

impl Breaker {
    pub fn new(peer: String, threshold: u32, cooldown: Duration) -> Breaker {
        metrics::gauge!(CIRCUIT_OPEN, "peer" => peer.clone()).set(0.0);
        Breaker {
            peer,
            threshold,
            cooldown,
            phase: Mutex::new(Phase::Closed { failures: 0 }),
        }
    }

    /// May a call go out now? `Err(wait)`: the circuit is open for about that long.
    pub fn admit(&self) -> Result<(), Duration> {
        if self.threshold == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut p = self.phase.lock().unwrap_or_else(|x| x.into_inner());
        match *p {
            Phase::Closed { .. } => Ok(()),
            Phase::Open { until } if now < until => {
                metrics::counter!(FAST_FAILURES, "peer" => self.peer.clone()).increment(1);
                Err(until - now)
            }
            Phase::Probing { since } if now.duration_since(since) < self.cooldown => {
                metrics::counter!(FAST_FAILURES, "peer" => self.peer.clone()).increment(1);
                Err(self.cooldown - now.duration_since(since))
            }
            // Cooled down (or the last probe never reported): this call probes.
            Phase::Open { .. } | Phase::Probing { .. } => {
                *p = Phase::Probing { since: now };
                Ok(())
            }
        }
    }

    pub fn success(&self) {
        if self.threshold == 0 {
            return;
        }
        let mut p = self.phase.lock().unwrap_or_else(|x| x.into_inner());
        if !matches!(*p, Phase::Closed { .. }) {
            tracing::info!(peer = %self.peer, "cluster RPC circuit closed: the peer answers again");
            metrics::gauge!(CIRCUIT_OPEN, "peer" => self.peer.clone()).set(0.0);
        }
        *p = Phase::Closed { failures: 0 };
    }

    pub fn failure(&self) {
        if self.threshold == 0 {
            return;
        }
        let now = Instant::now();
        let mut p = self.phase.lock().unwrap_or_else(|x| x.into_inner());
        *p = match *p {
            Phase::Closed { failures } if failures + 1 < self.threshold => Phase::Closed {
                failures: failures + 1,
            },
            Phase::Closed { failures } => {
                tracing::warn!(peer = %self.peer, failures = failures + 1, cooldown_ms = self.cooldown.as_millis() as u64, "cluster RPC circuit opened: calls to this peer fail at once until a probe gets through");
                metrics::counter!(CIRCUIT_OPENED, "peer" => self.peer.clone()).increment(1);
                metrics::gauge!(CIRCUIT_OPEN, "peer" => self.peer.clone()).set(1.0);
                Phase::Open {
                    until: now + self.cooldown,
                }
            }
            // A failed probe (or a late failure while open): wait another cooldown.
            Phase::Probing { .. } | Phase::Open { .. } => Phase::Open {
                until: now + self.cooldown,
            },
        };
    }

    /// Open or probing.
    pub fn is_open(&self) -> bool {
        !matches!(
            *self.phase.lock().unwrap_or_else(|x| x.into_inner()),
            Phase::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_probes_after_the_cooldown_and_closes_on_success() {
        let b = Breaker::new("p".into(), 3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(b.admit().is_ok());
            b.failure();
        }
        assert!(!b.is_open(), "two failures of three");
        b.success();
        for _ in 0..3 {
            assert!(b.admit().is_ok());
            b.failure();
        }
        assert!(b.is_open());
        assert!(b.admit().is_err(), "open: fail fast");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok(), "cooled down: one probe");
        assert!(b.admit().is_err(), "only one probe at a time");
        b.failure();
        assert!(b.admit().is_err(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok());
        b.success();
        assert!(!b.is_open());
        assert!(
            b.admit().is_ok() && b.admit().is_ok(),
            "closed: everything goes"
        );
    }

    #[test]
    fn a_probe_that_never_reports_does_not_block_forever() {
        let b = Breaker::new("p".into(), 1, Duration::from_millis(30));
        b.failure();
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok());
        // Its caller went away; after another cooldown a new probe may go.
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok());
    }

    #[test]
    fn zero_threshold_never_opens() {
        let b = Breaker::new("p".into(), 0, Duration::from_secs(60));
        for _ in 0..100 {
            b.failure();
        }
        assert!(b.admit().is_ok() && !b.is_open());
    }
}
