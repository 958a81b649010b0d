//! The worker's network policy, applied where connections are made: host
//! names are checked for shape, resolved, and refused when any resolved
//! address is private (unless the policy allows private networks).
//!
//! Checking every resolved address, not just the first, means a name that
//! resolves to both a public and a private address is refused. Drivers that
//! do not need the name for TLS verification are then given the checked
//! address itself ("pinned"), so a second, different DNS answer (rebinding)
//! cannot send them elsewhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::NetworkPolicy;
use super::errors::{DriverError, ErrorType, from_io};

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
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT, cloud internals)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
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
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail());
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Checks that `host` is a DNS name or an IP literal: letters, digits,
/// `-`, `_` and `.` in labels of at most 63 characters, or an IPv4/IPv6
/// address (brackets allowed). Rejects everything a driver might read as
/// something else: `/` (Unix socket paths), `,` (extra hosts), `=` and
/// spaces (option strings), `@`, `:` outside IPv6, `%` (zone ids).
pub fn validate_host(field: &str, host: &str) -> Result<(), DriverError> {
    let bad = |why: &str| Err(DriverError::invalid_config(format!("config.{field} {why}")));
    if host.is_empty() {
        return bad("is required");
    }
    if host.len() > 253 {
        return bad("is longer than 253 characters");
    }
    if parse_ip_literal(host).is_some() {
        return Ok(());
    }
    if host.starts_with('/') {
        return bad("must be a host name or IP address, not a socket path");
    }
    if host.contains(',') {
        return bad("must name a single host");
    }
    let labels_ok = host.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !labels_ok {
        return bad("must be a host name or IP address");
    }
    Ok(())
}

/// `host` as an IP address, accepting `[v6]`.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Resolves `host:port` and applies the policy to every address. Fails with
/// `dns_error` when the name does not resolve and `blocked_address` when any
/// address is restricted and private networks are not allowed.
pub async fn resolve(host: &str, port: u16, policy: &NetworkPolicy) -> Result<Vec<SocketAddr>, DriverError> {
    let addrs: Vec<SocketAddr> = match parse_ip_literal(host) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => match tokio::net::lookup_host((host, port)).await {
            Ok(found) => found.collect(),
            Err(_) => {
                return Err(DriverError::new(
                    ErrorType::DnsError,
                    format!("could not resolve host {host}"),
                ));
            }
        },
    };
    if addrs.is_empty() {
        return Err(DriverError::new(
            ErrorType::DnsError,
            format!("host {host} has no addresses"),
        ));
    }
    check(host, &addrs, policy)?;
    Ok(addrs)
}

/// Applies the policy to already resolved addresses.
pub fn check(host: &str, addrs: &[SocketAddr], policy: &NetworkPolicy) -> Result<(), DriverError> {
    if policy.allow_private_networks {
        return Ok(());
    }
    match addrs.iter().find(|addr| is_restricted(addr.ip())) {
        // An address the user typed is theirs to see; what a name resolves
        // to is not (it would map the worker's internal network).
        Some(addr) if parse_ip_literal(host).is_some() => Err(DriverError::new(
            ErrorType::BlockedAddress,
            format!(
                "{} is a private or local address, which this worker does not connect to",
                addr.ip()
            ),
        )),
        Some(_) => Err(DriverError::new(
            ErrorType::BlockedAddress,
            format!("{host} resolves to a private or local address, which this worker does not connect to"),
        )),
        None => Ok(()),
    }
}

/// Opens and closes a TCP connection to the first address that accepts
/// one, to tell a refused or unreachable server apart from a slow one
/// before a pool starts retrying. Sends no bytes (PostgreSQL does not log
/// an empty connection).
pub async fn probe(host: &str, addrs: &[SocketAddr], limit: Duration) -> Result<SocketAddr, DriverError> {
    let target = |addr: &SocketAddr| format!("{host}:{}", addr.port());
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                drop(stream);
                return Ok(*addr);
            }
            Ok(Err(error)) => last = Some(from_io(&error, &target(addr))),
            Err(_) => {
                last = Some(DriverError::new(
                    ErrorType::Timeout,
                    format!("{} did not answer in time", target(addr)),
                ))
            }
        }
    }
    Err(last
        .unwrap_or_else(|| DriverError::new(ErrorType::DnsError, format!("host {host} has no addresses"))))
}

/// A checked TCP endpoint of a connector: the configured host, and the
/// address drivers are pinned to when the policy needs it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Set when private networks are not allowed and the driver does not
    /// need the host name (for TLS name verification): the driver then
    /// connects to this checked address and never resolves the name itself.
    pub pinned: Option<IpAddr>,
}

impl Endpoint {
    /// Resolves and checks `host:port`; pins the first address unless the
    /// policy allows private networks or `keep_name` (verify-full TLS) is set.
    /// Also returns the addresses a connection may use (just the pinned one
    /// when pinned).
    pub async fn open(
        host: &str,
        port: u16,
        policy: &NetworkPolicy,
        keep_name: bool,
    ) -> Result<(Endpoint, Vec<SocketAddr>), DriverError> {
        let addrs = resolve(host, port, policy).await?;
        let pinned = (!policy.allow_private_networks && !keep_name).then(|| addrs[0].ip());
        let dial = match pinned {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => addrs,
        };
        Ok((
            Endpoint {
                host: host.to_owned(),
                port,
                pinned,
            },
            dial,
        ))
    }

    /// What the driver is told to connect to.
    pub fn connect_host(&self) -> String {
        match self.pinned {
            Some(ip) => ip.to_string(),
            None => self.host.clone(),
        }
    }

    /// `host:port` for messages.
    pub fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Re-resolves and re-checks the host. `Ok(None)` means the pinned
    /// address is no longer among the host's addresses (the pool should be
    /// rebuilt); `Ok(Some(addrs))` gives the addresses a connection may use.
    pub async fn recheck(&self, policy: &NetworkPolicy) -> Result<Option<Vec<SocketAddr>>, DriverError> {
        let addrs = resolve(&self.host, self.port, policy).await?;
        match self.pinned {
            Some(ip) if !addrs.iter().any(|addr| addr.ip() == ip) => Ok(None),
            Some(ip) => Ok(Some(vec![SocketAddr::new(ip, self.port)])),
            None => Ok(Some(addrs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_embedded_v4_addresses_are_restricted() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(
                is_restricted(ip.parse().expect("ip")),
                "{ip} should be restricted"
            );
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_restricted(ip.parse().expect("ip")), "{ip} should be public");
        }
    }

    #[test]
    fn hosts_must_be_names_or_ip_literals() {
        for ok in [
            "db.example.com",
            "localhost",
            "127.0.0.1",
            "::1",
            "[::1]",
            "my_db-1.internal.",
        ] {
            assert!(validate_host("host", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/var/run/postgresql",
            "a,b",
            "host=evil",
            "db example",
            "user@db",
            "db:5432",
            "-db",
            "fe80::1%eth0",
            "db..example",
        ] {
            let error = validate_host("host", bad).expect_err(bad);
            assert_eq!(error.kind(), ErrorType::InvalidConfig, "{bad}");
        }
    }

    #[tokio::test]
    async fn resolving_localhost_is_blocked_unless_private_networks_are_allowed() {
        let strict = NetworkPolicy {
            allow_private_networks: false,
            sqlite_dir: std::env::temp_dir(),
        };
        let error = resolve("localhost", 5432, &strict).await.expect_err("blocked");
        assert_eq!(error.kind(), ErrorType::BlockedAddress);
        let open = NetworkPolicy {
            allow_private_networks: true,
            ..strict
        };
        assert!(
            !resolve("localhost", 5432, &open)
                .await
                .expect("resolves")
                .is_empty()
        );
        let error = resolve("no-such-host.invalid", 5432, &open)
            .await
            .expect_err("dns");
        assert_eq!(error.kind(), ErrorType::DnsError);
    }
}
