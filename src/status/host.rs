//! Which `Host` headers the TCP status endpoint answers. A web page can make a
//! browser on the gateway's network send requests to `127.0.0.1:8470` under a
//! name it controls (DNS rebinding); the browser then sends that name as `Host`.
//! Answering only loopback names and addresses, or the address the endpoint was
//! configured to listen on, leaves such a page nothing to read (421 otherwise).

use std::net::{IpAddr, SocketAddr};

/// The `Host` values one TCP listener accepts.
#[derive(Debug, Clone)]
pub struct HostGuard {
    listen: Option<SocketAddr>,
    /// `[status] allow_remote` on a wildcard address: any IP literal is the
    /// gateway's own address (a rebinding page can only send a name).
    any_ip: bool,
}

impl HostGuard {
    pub fn new(listen: Option<SocketAddr>, allow_remote: bool) -> HostGuard {
        let wildcard = listen.is_some_and(|a| a.ip().is_unspecified());
        HostGuard {
            listen,
            any_ip: allow_remote && wildcard,
        }
    }

    /// Whether a request with this `Host` header (absent: HTTP/1.0) is answered.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            // HTTP/1.0 without Host: a local tool, not a browser.
            return true;
        };
        let name = strip_port(host.trim());
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let bare = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        match bare.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || self.any_ip || self.listen.is_some_and(|a| a.ip() == ip),
            Err(_) => false,
        }
    }
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if host.starts_with('[') => {
            if host[..i].ends_with(']') {
                &host[..i]
            } else {
                host
            }
        }
        Some(i) if host[..i].contains(':') => host,
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str, remote: bool) -> HostGuard {
        HostGuard::new(Some(listen.parse().unwrap()), remote)
    }

    #[test]
    fn loopback_names_and_addresses_pass() {
        let g = guard("127.0.0.1:8470", false);
        for host in [
            "localhost",
            "LOCALHOST:8470",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8470",
            "127.8.9.1:1",
            "[::1]",
            "[::1]:8470",
        ] {
            assert!(g.allows(Some(host)), "{host}");
        }
        assert!(g.allows(None));
    }

    #[test]
    fn other_names_and_addresses_are_refused() {
        let g = guard("127.0.0.1:8470", false);
        for host in [
            "attacker.example",
            "attacker.example:8470",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "192.168.1.10:8470",
            "",
            "[::1",
        ] {
            assert!(!g.allows(Some(host)), "{host}");
        }
    }

    #[test]
    fn the_configured_address_passes() {
        let g = guard("192.168.1.10:8470", true);
        assert!(g.allows(Some("192.168.1.10:8470")));
        assert!(!g.allows(Some("192.168.1.11:8470")));
        assert!(!g.allows(Some("gateway.example")));
        let any = guard("0.0.0.0:8470", true);
        assert!(any.allows(Some("10.0.0.7:8470")));
        assert!(!any.allows(Some("gateway.example:8470")));
        assert!(!guard("0.0.0.0:8470", false).allows(Some("10.0.0.7")));
    }
}
