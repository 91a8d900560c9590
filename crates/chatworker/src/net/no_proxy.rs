//! Which hosts bypass the proxy: a `NO_PROXY` list as curl, Go and Google's
//! clients read it. Entries are separated by commas (or spaces): `*` (every
//! host), a host or domain (`example.com` and `.example.com` both match the
//! domain and every name under it), an IP address, or a CIDR block
//! (`10.0.0.0/8`, `fd00::/8`). A port after an entry is ignored.

use std::net::IpAddr;

/// A parsed `NO_PROXY` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NoProxy {
    all: bool,
    domains: Vec<String>,
    blocks: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    /// Parses `list`; entries that are neither names nor addresses are
    /// skipped (as every other reader of the variable does).
    pub(crate) fn parse(list: &str) -> Self {
        let mut parsed = Self::default();
        for entry in list.split([',', ' ', '\t', '\n']).map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                parsed.all = true;
                continue;
            }
            if let Some(block) = cidr(entry) {
                parsed.blocks.push(block);
                continue;
            }
            let host = strip_port(entry)
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.');
            if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                parsed.blocks.push((ip, bits));
            } else if !host.is_empty() {
                parsed.domains.push(host.to_ascii_lowercase());
            }
        }
        parsed
    }

    /// Whether nothing is listed.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        !self.all && self.domains.is_empty() && self.blocks.is_empty()
    }

    /// Whether `host` (a name or an address, without a port) bypasses the
    /// proxy.
    pub(crate) fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_matches(['[', ']']).trim_end_matches('.');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.blocks.iter().any(|&(net, bits)| within(ip, net, bits));
        }
        let host = host.to_ascii_lowercase();
        self.domains.iter().any(|domain| {
            host == *domain
                || host
                    .strip_suffix(domain.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; a bare IPv6 address stays.
fn strip_port(entry: &str) -> &str {
    if entry.starts_with('[') {
        return entry.split_inclusive(']').next().unwrap_or(entry);
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => entry,
    }
}

fn cidr(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = entry.split_once('/')?;
    let addr: IpAddr = addr.trim_matches(['[', ']']).parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

fn within(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V4(_)) => ip
            .to_ipv4_mapped()
            .is_some_and(|v4| within(IpAddr::V4(v4), net, bits)),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_themselves_and_what_is_under_them() {
        let list = NoProxy::parse("example.com, .corp.internal,*.svc.local");
        assert!(list.matches("example.com"));
        assert!(list.matches("api.example.com"));
        assert!(list.matches("API.Example.COM."));
        assert!(!list.matches("notexample.com"));
        assert!(!list.matches("example.com.evil.net"));
        assert!(list.matches("corp.internal"));
        assert!(list.matches("proxy.corp.internal"));
        assert!(list.matches("a.b.svc.local"));
        assert!(NoProxy::parse("example.com.").matches("www.example.com"));
        assert!(!list.matches("pubsub.googleapis.com"));
    }

    #[test]
    fn addresses_and_blocks_match_by_address() {
        let list = NoProxy::parse("10.0.0.0/8 192.168.1.7 fd00::/8 [::1]:8085 169.254.169.254:80");
        assert!(list.matches("10.20.30.40"));
        assert!(!list.matches("11.0.0.1"));
        assert!(list.matches("192.168.1.7"));
        assert!(!list.matches("192.168.1.8"));
        assert!(list.matches("fd12::1"));
        assert!(list.matches("[::1]"));
        assert!(list.matches("169.254.169.254"));
        assert!(
            list.matches("::ffff:10.1.2.3"),
            "a v4-mapped address is its v4 address"
        );
        assert!(!list.matches("example.com"));
    }

    #[test]
    fn a_star_matches_everything_and_ports_are_ignored() {
        assert!(NoProxy::parse("*").matches("pubsub.googleapis.com"));
        let list = NoProxy::parse("chat.googleapis.com:443");
        assert!(list.matches("chat.googleapis.com"));
        assert!(NoProxy::parse("").is_empty());
        assert!(NoProxy::parse(" , ").is_empty());
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8"));
    }
}
