//! Trace ids: one per submitting request, carried by the tasks it creates through the whole
//! cluster (forward, Raft, placement, run, completion; see `edgerun_model::TRACE_TARGET`).
//!
//! A client that already has a trace passes it in a W3C `traceparent` header
//! (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`); otherwise the node makes one.
//! The answer names it in `x-trace-id`, and the task's JSON in `trace_id`.

use actix_web::HttpRequest;

/// The response header that names the request's trace id.
pub const RESPONSE_HEADER: &str = "x-trace-id";

/// The trace id of this request: the client's (`traceparent`), or a new random one.
pub fn of_request(req: &HttpRequest) -> String {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
        .unwrap_or_else(new_id)
}

/// A fresh random 128-bit trace id (32 lower-case hex digits).
///
/// From a per-thread generator (fastrand: wyrand, seeded from the OS once per thread): a
/// trace id must be unique, not secret. Reading /dev/urandom for each request opened a file
/// per submission (~4% of a leader's CPU under load).
pub fn new_id() -> String {
    let mut n = fastrand::u128(..);
    // The all-zero id is invalid in W3C trace context.
    if n == 0 {
        n = 1;
    }
    format!("{n:032x}")
}

/// The trace id of a valid W3C `traceparent` (version 00); none for anything else.
pub fn parse_traceparent(v: &str) -> Option<String> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [ver, trace, parent, flags]
            if hex(ver, 2)
                && *ver != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && parent.bytes().any(|b| b != b'0') =>
        {
            Some((*trace).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn new_ids_are_32_hex_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(parse_traceparent(&format!("00-{a}-00f067aa0ba902b7-01")).is_some());
    }
}
