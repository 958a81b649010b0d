//! Which IP addresses count as private or local for the network policy
//! (`FERRY_ALLOW_PRIVATE_NETWORKS`): one classification for every role that
//! connects somewhere on a user's behalf (the worker's connectors, the API's
//! OAuth token requests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Whether `ip` is loopback, private, link-local, unspecified, unique-local
/// or otherwise not a public unicast address. IPv4 addresses embedded in
/// IPv6 ones (mapped, compatible, NAT64, 6to4) are judged as IPv4.
pub fn is_restricted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_restricted_v4(v4),
        IpAddr::V6(v6) => is_restricted_v6(v6),
    }
}

fn is_restricted_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT, cloud internals)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_restricted_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_restricted_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
        || (ip.segments()[..4] == [0x0100, 0, 0, 0]) // discard-only 100::/64
}

/// The IPv4 address carried by an IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4
/// (`2002:aabb:ccdd::`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let [a, b] = s[6].to_be_bytes();
    let [c, d] = s[7].to_be_bytes();
    let tail = Ipv4Addr::new(a, b, c, d);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// The HTTP client of OAuth token requests: no redirects, a timeout, and
/// (unless private networks are allowed) a resolver that refuses a name
/// resolving to any private or local address when the connection is made.
/// A refused name fails the request with [`BlockedAddress`] in its error
/// chain.
pub fn token_client(allow_private: bool, timeout: Duration) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout);
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PolicyResolver));
    }
    builder.build().unwrap_or_else(|error| {
        tracing::error!(%error, "cannot build the OAuth HTTP client with its settings; using the defaults");
        reqwest::Client::new()
    })
}

/// Whether `error` failed because a name resolved to a private or local
/// address.
pub fn is_blocked(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.downcast_ref::<BlockedAddress>().is_some() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// A resolver that fails for a name with any private or local address.
struct PolicyResolver;

/// The error a blocked name resolves to.
#[derive(Debug, thiserror::Error)]
#[error("the name resolves to a private or local address")]
pub struct BlockedAddress;

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.iter().any(|addr| is_restricted(addr.ip())) {
                return Err(Box::new(BlockedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restricted(text: &str) -> bool {
        is_restricted(text.parse().expect("ip"))
    }

    #[test]
    fn local_private_and_embedded_private_addresses_are_restricted_and_public_ones_are_not() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a01:203",
            "2002:a01:203::",
        ] {
            assert!(restricted(ip), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!restricted(ip), "{ip}");
        }
    }
}
