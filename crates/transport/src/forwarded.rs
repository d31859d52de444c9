//! The client address of a request behind trusted reverse proxies: `X-Forwarded-For` or
//! `Forwarded: for=…` are believed only when the connection comes from a configured proxy, and
//! then the right-most address that is not itself a trusted proxy is the client (a client can
//! put anything at the left of the list; only what the proxies appended is true). HTTP only: no
//! knowledge of what the address is used for.

use std::net::IpAddr;

/// Trusted proxy addresses and networks (`TRUSTED_PROXIES`: `10.0.0.5,192.168.0.0/16,::1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (canonical(ip), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR networks; says which entry is bad.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let ip = canonical(
                addr.parse::<IpAddr>()
                    .map_err(|_| format!("TRUSTED_PROXIES: {item:?} is not an address"))?,
            );
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("TRUSTED_PROXIES: {item:?} has a bad prefix"))?,
            };
            nets.push((ip, bits));
        }
        Ok(TrustedProxies { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|(net, bits)| in_net(ip, *net, *bits))
    }

    /// The client address of a request that arrived from `peer` with these headers (lower-case
    /// names): `peer` itself unless it is a trusted proxy that forwarded an address.
    pub fn client(&self, peer: IpAddr, headers: &[(String, String)]) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut chain: Vec<IpAddr> = Vec::new();
        let xff: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n == "x-forwarded-for")
            .map(|(_, v)| v.as_str())
            .collect();
        if !xff.is_empty() {
            for part in xff.iter().flat_map(|v| v.split(',')) {
                if let Some(ip) = parse_node(part) {
                    chain.push(ip);
                }
            }
        } else {
            for value in headers.iter().filter(|(n, _)| n == "forwarded") {
                for element in value.1.split(',') {
                    for pair in element.split(';') {
                        if let Some((k, v)) = pair.split_once('=')
                            && k.trim().eq_ignore_ascii_case("for")
                            && let Some(ip) = parse_node(v)
                        {
                            chain.push(ip);
                        }
                    }
                }
            }
        }
        chain
            .iter()
            .rev()
            .find(|ip| !self.contains(**ip))
            .or(chain.first())
            .map_or(peer, |ip| canonical(*ip))
    }
}

/// One forwarded node: `1.2.3.4`, `1.2.3.4:5678`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = t.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    t.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn h(name: &str, v: &str) -> Vec<(String, String)> {
        vec![(name.into(), v.into())]
    }

    #[test]
    fn parses_networks_and_refuses_garbage() {
        let t = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8,::1").expect("list");
        assert!(t.contains(ip("10.1.2.3")) && t.contains(ip("127.0.0.1")) && t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:10.9.9.9")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
        assert!(TrustedProxies::parse("").expect("empty").is_empty());
    }

    #[test]
    fn the_rightmost_untrusted_forwarded_address_is_the_client() {
        let t = TrustedProxies::parse("127.0.0.1,10.0.0.0/8").expect("list");
        let proxy = ip("127.0.0.1");
        // A client cannot choose its address by writing into the header: the proxy appended it.
        let xff = h("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2");
        assert_eq!(t.client(proxy, &xff), ip("203.0.113.7"));
        let fwd = h(
            "forwarded",
            r#"for="[2001:db8::1]:4711";proto=https, for=10.0.0.3"#,
        );
        assert_eq!(t.client(proxy, &fwd), ip("2001:db8::1"));
        assert_eq!(
            t.client(proxy, &h("forwarded", "for=198.51.100.4:80")),
            ip("198.51.100.4")
        );
        // Not from a proxy: the header is ignored.
        assert_eq!(t.client(ip("203.0.113.9"), &xff), ip("203.0.113.9"));
        // From a proxy without a header: the proxy itself.
        assert_eq!(t.client(proxy, &[]), proxy);
    }
}
