//! The worker's network policy, applied where connections are made: host
//! names are checked for shape, resolved, and refused when any resolved
//! address is private (unless the policy allows private networks).
//!
//! Checking every resolved address, not just the first, means a name that
//! resolves to both a public and a private address is refused. Drivers that
//! do not need the name for TLS verification are then given the checked
//! address itself ("pinned"), so a second, different DNS answer (rebinding)
//! cannot send them elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::NetworkPolicy;
use super::errors::{DriverError, ErrorType, from_io};

pub use ferry_shared::network::is_restricted;

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

/// Process-wide stand-ins for the outside world, filled only by the
/// worker's integration tests: host names and the addresses they resolve to
/// (consulted before DNS; the policy still applies), and local addresses
/// the policy treats as public. Nothing in the worker calls the setters.
#[doc(hidden)]
pub mod testing {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::{Mutex, OnceLock};

    fn table() -> &'static Mutex<HashMap<String, Vec<IpAddr>>> {
        static TABLE: OnceLock<Mutex<HashMap<String, Vec<IpAddr>>>> = OnceLock::new();
        TABLE.get_or_init(|| Mutex::new(HashMap::new()))
    }

    /// Makes `host` resolve to `ips` in this process.
    pub fn resolve_as(host: &str, ips: &[IpAddr]) {
        if let Ok(mut table) = table().lock() {
            table.insert(host.to_ascii_lowercase(), ips.to_vec());
        }
    }

    fn allowed() -> &'static Mutex<Vec<IpAddr>> {
        static ALLOWED: OnceLock<Mutex<Vec<IpAddr>>> = OnceLock::new();
        ALLOWED.get_or_init(|| Mutex::new(Vec::new()))
    }

    /// Makes the policy treat `ip` as a public address in this process
    /// (a local server standing in for a public one).
    pub fn treat_as_public(ip: IpAddr) {
        if let Ok(mut allowed) = allowed().lock() {
            allowed.push(ip);
        }
    }

    pub(super) fn is_treated_as_public(ip: IpAddr) -> bool {
        allowed().lock().is_ok_and(|allowed| allowed.contains(&ip))
    }

    pub(super) fn lookup(host: &str) -> Option<Vec<IpAddr>> {
        table().lock().ok()?.get(&host.to_ascii_lowercase()).cloned()
    }
}

/// Resolves `host:port` and applies the policy to every address. Fails with
/// `dns_error` when the name does not resolve and `blocked_address` when any
/// address is restricted and private networks are not allowed.
pub async fn resolve(host: &str, port: u16, policy: &NetworkPolicy) -> Result<Vec<SocketAddr>, DriverError> {
    let fixed = testing::lookup(host);
    let addrs: Vec<SocketAddr> = match (parse_ip_literal(host), fixed) {
        (Some(ip), _) => vec![SocketAddr::new(ip, port)],
        (None, Some(ips)) => ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(),
        (None, None) => match tokio::net::lookup_host((host, port)).await {
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
    match addrs
        .iter()
        .find(|addr| is_restricted(addr.ip()) && !testing::is_treated_as_public(addr.ip()))
    {
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
    /// The checked address the driver connects to, never resolving the name
    /// itself. Set when private networks are not allowed, and always for a
    /// host name under verify-full TLS.
    pub pinned: Option<IpAddr>,
    /// The driver needs the host name (verify-full TLS): it is given the
    /// name for certificate verification and SNI, and reaches the pinned
    /// address through a [`Relay`].
    pub via_relay: bool,
}

impl Endpoint {
    /// Resolves and checks `host:port`. Without `keep_name`, pins the first
    /// address unless the policy allows private networks. With `keep_name`
    /// (verify-full TLS) and a host name, pins one checked address (the
    /// first that accepts a connection when there are several) to be
    /// reached through a relay. Also returns the addresses a connection may
    /// use (just the pinned one when pinned).
    pub async fn open(
        host: &str,
        port: u16,
        policy: &NetworkPolicy,
        keep_name: bool,
    ) -> Result<(Endpoint, Vec<SocketAddr>), DriverError> {
        let addrs = resolve(host, port, policy).await?;
        let via_relay = keep_name && parse_ip_literal(host).is_none();
        let pinned = if via_relay {
            let chosen = match addrs.as_slice() {
                [only] => *only,
                _ => probe(host, &addrs, RELAY_PROBE_TIMEOUT).await.unwrap_or(addrs[0]),
            };
            Some(chosen.ip())
        } else {
            (!policy.allow_private_networks).then(|| addrs[0].ip())
        };
        let dial = match pinned {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => addrs,
        };
        Ok((
            Endpoint {
                host: host.to_owned(),
                port,
                pinned,
                via_relay,
            },
            dial,
        ))
    }

    /// What the driver is told to connect to (and, under verify-full, the
    /// name it verifies the certificate against).
    pub fn connect_host(&self) -> String {
        match self.pinned {
            Some(ip) if !self.via_relay => ip.to_string(),
            _ => self.host.clone(),
        }
    }

    /// The relay to the pinned address, listening at `dir/<file_name>`,
    /// when this endpoint needs one.
    pub fn relay(&self, file_name: &str, connect_timeout: Duration) -> Result<Option<Relay>, DriverError> {
        match self.pinned {
            Some(ip) if self.via_relay => {
                Relay::start(SocketAddr::new(ip, self.port), file_name, connect_timeout).map(Some)
            }
            _ => Ok(None),
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

/// How long choosing among a name's several addresses may take per address.
const RELAY_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A Unix socket that forwards every connection to one checked TCP address.
///
/// sqlx verifies a server certificate against the host it connects to; it
/// cannot connect to an address while verifying another name. It does,
/// however, run the same TLS upgrade (with the configured host name) over a
/// Unix socket. So under verify-full the driver is given the host name for
/// TLS and this socket as its transport, and the relay dials the address
/// the policy checked: a second, different DNS answer is never used.
///
/// The socket lives in a directory of its own (mode 0700) under the
/// system's temporary directory; dropping the relay stops accepting and
/// removes it (connections already relayed carry on until closed).
pub(crate) struct Relay {
    dir: PathBuf,
    path: PathBuf,
    accept: tokio::task::AbortHandle,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("path", &self.path).finish()
    }
}

impl Relay {
    pub fn start(
        target: SocketAddr,
        file_name: &str,
        connect_timeout: Duration,
    ) -> Result<Relay, DriverError> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let failed = |_| DriverError::unknown("the worker could not open a local relay socket");
        let mut attempt = 0;
        let dir = loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = std::env::temp_dir().join(format!(
                "ferry-relay-{}-{}-{nanos:x}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                    attempt += 1
                }
                Err(error) => return Err(failed(error)),
            }
        };
        let path = dir.join(file_name);
        let listener = match tokio::net::UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(failed(error));
            }
        };
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(Ok(mut outbound)) =
                        tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(target)).await
                    else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        })
        .abort_handle();
        Ok(Relay { dir, path, accept })
    }

    /// The directory holding the socket (PostgreSQL's `host`-as-directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The socket itself (MySQL's `socket`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            trusted_roots: Default::default(),
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
