//! Where a node may send HTTP on a user's behalf (a stream job's `http` sink, an HTTP task): a list of
//! networks (`10.0.0.0/8`, `127.0.0.1/32`, `::1/128`) and `host:port` pairs. Empty allows
//! nothing, so that a job cannot reach the node's own API or a cloud metadata address unless
//! the operator says so. The check is on the address actually connected to (after DNS).

use std::net::{IpAddr, SocketAddr};

/// One checked entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Net { addr: IpAddr, prefix: u8 },
    HostPort { host: String, port: u16 },
}

/// Parse `entries`; an error names the entry and what is accepted.
pub fn parse(entries: &[String]) -> Result<Vec<Allowed>, String> {
    entries.iter().map(|e| parse_one(e)).collect()
}

fn parse_one(e: &str) -> Result<Allowed, String> {
    let bad = || format!("{e:?}: a network (10.0.0.0/8, ::1/128) or host:port");
    if let Some((a, p)) = e.split_once('/') {
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p.parse().ok().filter(|p| *p <= max).ok_or_else(bad)?;
        return Ok(Allowed::Net { addr, prefix });
    }
    let (h, p) = e.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = p.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    let host = h.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Allowed::HostPort {
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether connecting to `addr` (resolved from `host`) is allowed.
pub fn allows(list: &[Allowed], host: &str, addr: SocketAddr) -> bool {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    list.iter().any(|a| match a {
        Allowed::Net { addr: net, prefix } => in_net(ip, *net, *prefix),
        Allowed::HostPort { host: h, port } => {
            *port == addr.port() && (h.eq_ignore_ascii_case(host) || h.parse::<IpAddr>() == Ok(ip))
        }
    })
}

/// Resolve `host:port` and keep the addresses `list` allows (none: an error that names
/// `setting`). An HTTP client that connects only to what this returns (ureq's resolver)
/// cannot be sent past the check by a name that resolves elsewhere later (DNS rebinding) or
/// by a redirect (each hop is resolved here again).
pub fn resolve(list: &[Allowed], netloc: &str, setting: &str) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    let host = netloc
        .rsplit_once(':')
        .map_or(netloc, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let all: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
    let ok: Vec<SocketAddr> = all
        .iter()
        .copied()
        .filter(|a| allows(list, host, *a))
        .collect();
    if ok.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{netloc} ({all:?}) is not in {setting} on this node"),
        ));
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_host_ports() {
        let l = parse(&[
            "10.0.0.0/8".into(),
            "sink.example:8080".into(),
            "::1/128".into(),
        ])
        .expect("valid");
        let at = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(allows(&l, "x", at("10.1.2.3:80")));
        assert!(!allows(&l, "x", at("11.0.0.1:80")));
        assert!(allows(&l, "sink.example", at("192.0.2.1:8080")));
        assert!(!allows(&l, "sink.example", at("192.0.2.1:8081")));
        assert!(allows(&l, "x", at("[::1]:9")));
        assert!(!allows(&l, "x", at("127.0.0.1:9")), "not listed");
        assert!(!allows(&[], "x", at("10.1.2.3:80")), "empty allows nothing");
        // An IPv4-mapped IPv6 address is checked as the IPv4 one.
        assert!(allows(&l, "x", at("[::ffff:10.0.0.1]:80")));
        for bad in ["10.0.0.0/33", "nothing", "host:0", "/8", ":80"] {
            assert!(parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
