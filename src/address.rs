//! Client addresses, as the per-address limits count them (contract section
//! 22): an IPv4 address or an IPv6 /64, the client behind N trusted proxies, and
//! the per-instance count of failed authentications per address. No HTTP here:
//! [`crate::http::client_addr`] reads these from a request.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bucket a client is counted in: an IPv4 address, an IPv6 /64
/// (`2001:db8:1:2::/64`), or `unknown` when there is no peer address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientAddr(String);

impl ClientAddr {
    /// The bucket of `ip`: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64.
    pub fn of(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => Self(v4.to_string()),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                let prefix = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                Self(format!("{prefix}/64"))
            }
        }
    }

    pub fn unknown() -> Self {
        Self("unknown".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:80`) or in brackets.
fn parse_entry(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim().trim_matches('"');
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = raw.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    raw.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

/// The client's address behind `trusted_proxies` proxies, from the
/// `X-Forwarded-For` entries (every header line, in order) and the peer.
///
/// Each trusted proxy appends the address it got the request from, so the
/// N-th entry from the right is the last one a trusted proxy wrote; anything
/// left of it may be the client's own invention and is never used. With fewer
/// entries than proxies, the leftmost one (still written by a proxy) is used;
/// with none, or an unreadable one, the peer.
pub fn client_ip(
    forwarded_for: &[&[u8]],
    peer: Option<IpAddr>,
    trusted_proxies: u32,
) -> Option<IpAddr> {
    if trusted_proxies == 0 {
        return peer;
    }
    let entries: Vec<&[u8]> = forwarded_for
        .iter()
        .flat_map(|line| line.split(|b| *b == b','))
        .filter(|e| !e.iter().all(u8::is_ascii_whitespace))
        .collect();
    let n = trusted_proxies as usize;
    let chosen = match entries.len() {
        0 => return peer,
        len if len >= n => entries[len - n],
        _ => entries[0],
    };
    std::str::from_utf8(chosen)
        .ok()
        .and_then(parse_entry)
        .or(peer)
}

/// Most addresses tracked by [`AuthFailures`]; past it, buckets that have
/// refilled are forgotten (and if none has, all).
const MAX_TRACKED: usize = 100_000;

/// Failed authentications per client address on this instance (GCRA, burst
/// one second's worth). Each unknown key costs a store look-up; past the limit
/// an address's requests that the credential cache cannot answer get `429`
/// without one. Per instance on purpose: a fleet-wide count would itself cost
/// a store round trip per request.
pub struct AuthFailures {
    per_second: u32,
    /// Theoretical arrival time of each address's next failure.
    tat: Mutex<HashMap<ClientAddr, Instant>>,
}

impl AuthFailures {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: per_second.max(1),
            tat: Mutex::new(HashMap::new()),
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.per_second
    }

    /// `Err(seconds to wait)` when `addr` has used up its failures.
    pub fn check(&self, addr: &ClientAddr) -> Result<(), u64> {
        let now = Instant::now();
        let map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tat) = map.get(addr) else {
            return Ok(());
        };
        // Burst = one second's worth: refused once the debt would pass 1 s.
        let next = (*tat).max(now) + self.interval();
        let debt = next.saturating_duration_since(now);
        if debt > Duration::from_secs(1) {
            let wait = debt - Duration::from_secs(1);
            return Err(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        Ok(())
    }

    /// Counts one failed authentication of `addr`.
    pub fn record(&self, addr: &ClientAddr) {
        let now = Instant::now();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(addr) {
            map.retain(|_, tat| *tat > now);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let tat = map.entry(addr.clone()).or_insert(now);
        *tat = (*tat).max(now) + self.interval();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ipv6_is_counted_by_its_64() {
        assert_eq!(
            ClientAddr::of(ip("2001:db8:1:2:aaaa::1")),
            ClientAddr::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            ClientAddr::of(ip("2001:db8:1:2::1")),
            ClientAddr::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientAddr::of(ip("2001:db8:1:2::1")).as_str(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(ClientAddr::of(ip("::ffff:10.0.0.1")).as_str(), "10.0.0.1");
        assert_eq!(ClientAddr::of(ip("10.0.0.1")).as_str(), "10.0.0.1");
    }

    #[test]
    fn the_nth_entry_from_the_right_is_the_client() {
        let peer = Some(ip("10.9.9.9"));
        let xff: &[&[u8]] = &[b"6.6.6.6, 1.1.1.1", b"2.2.2.2"];
        assert_eq!(client_ip(xff, peer, 0), peer);
        assert_eq!(client_ip(xff, peer, 1), Some(ip("2.2.2.2")));
        assert_eq!(client_ip(xff, peer, 2), Some(ip("1.1.1.1")));
        assert_eq!(client_ip(xff, peer, 3), Some(ip("6.6.6.6")));
        assert_eq!(client_ip(xff, peer, 9), Some(ip("6.6.6.6")));
        assert_eq!(client_ip(&[], peer, 1), peer);
        assert_eq!(client_ip(&[b"garbage"], peer, 1), peer);
        assert_eq!(
            client_ip(&[b"[2001:db8::1]:443"], peer, 1),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(client_ip(&[b"1.2.3.4:80"], peer, 1), Some(ip("1.2.3.4")));
    }

    #[test]
    fn failed_authentications_are_bounded() {
        let f = AuthFailures::new(5);
        let a = ClientAddr::of(ip("10.0.0.1"));
        let b = ClientAddr::of(ip("10.0.0.2"));
        for _ in 0..5 {
            assert!(f.check(&a).is_ok());
            f.record(&a);
        }
        assert_eq!(f.check(&a), Err(1));
        assert!(f.check(&b).is_ok());
    }
}
