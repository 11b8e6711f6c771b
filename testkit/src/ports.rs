//! Free TCP ports for local clusters.
//!
//! Asking the kernel for port 0 and letting go of it is racy twice over: the same process can
//! be handed the same port again before a node binds it (a test saw node 3's API port equal
//! node 2's RPC port), and the port comes from the ephemeral range that every outgoing
//! connection on the machine also draws from. Here ports come from below that range
//! (20000..32000), each process walks it from its own starting point (spread by process id:
//! nextest runs every test in its own process, many at once), a port is never handed out
//! twice by one process, and each is checked bindable before it is handed out.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20_000;
const SPAN: u32 = 12_000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A port on 127.0.0.1 that is free now and that this process has not handed out before.
///
/// Panics only when no port of the 12,000 is free (a machine in trouble).
pub fn free_port() -> u16 {
    // The walk's start: spread by process id (consecutive ids land far apart).
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (FIRST + step % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 in {FIRST}..{}", FIRST + SPAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice_and_skip_bound_ones() {
        let first = free_port();
        // Hold the next one so the walk must step over it.
        let held = TcpListener::bind(("127.0.0.1", first + 1)).ok();
        let mut seen = std::collections::BTreeSet::new();
        seen.insert(first);
        for _ in 0..200 {
            let p = free_port();
            assert!(seen.insert(p), "port {p} handed out twice");
            assert!((FIRST..FIRST + SPAN).contains(&u32::from(p)), "{p}");
            if held.is_some() {
                assert_ne!(p, first + 1, "a bound port was handed out");
            }
        }
    }
}
