//! Format checks for connector config values: host names, identifiers, PEM
//! certificates, URLs, paths, HTTP header maps and MongoDB connection
//! strings (with the redaction of their password).
//!
//! Every check returns the reason as a phrase that follows the field's
//! label ("must be ..."), and never quotes the offending value: a value in
//! the wrong field may well be a password.

use std::net::{IpAddr, Ipv6Addr};

/// The placeholder that replaces a MongoDB password in public config.
pub const REDACTED_PASSWORD: &str = "****";

/// Longest accepted non-secret string.
pub(crate) const MAX_TEXT_LEN: usize = 1024;
/// Longest accepted secret string (long-lived tokens can be large).
pub(crate) const MAX_SECRET_LEN: usize = 16 * 1024;
/// Longest accepted PEM bundle.
pub(crate) const MAX_PEM_LEN: usize = 64 * 1024;
/// Most entries in a header map.
pub(crate) const MAX_HEADERS: usize = 50;

type Check = Result<(), String>;

fn fail(reason: impl Into<String>) -> Check {
    Err(reason.into())
}

/// A DNS name or an IP address literal and nothing else: no scheme, port,
/// path, user, list or socket path. IPv6 is written without brackets.
pub(crate) fn check_host(text: &str) -> Check {
    if is_host(text) {
        Ok(())
    } else {
        fail("must be a DNS name or an IP address only (no scheme, port, path, user name or list)")
    }
}

pub(crate) fn is_host(text: &str) -> bool {
    if text.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Letters, digits and underscores (e.g. a MySQL charset).
pub(crate) fn check_word(text: &str) -> Check {
    if !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(())
    } else {
        fail("must be letters, digits and underscores only")
    }
}

/// Letters, digits, `.`, `_` and `-`, starting with a letter or digit: the
/// account, project and tenant ids that drivers place into URLs.
pub(crate) fn check_name(text: &str) -> Check {
    let starts_well = text.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if starts_well
        && text.len() <= 255
        && !text.contains("..")
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(())
    } else {
        fail("must be letters, digits, '.', '_' and '-' only, starting with a letter or digit")
    }
}

/// A plain text value: no control characters (secrets may hold anything
/// but NUL), bounded length.
pub(crate) fn check_text(text: &str, secret: bool) -> Check {
    if secret {
        if text.len() > MAX_SECRET_LEN {
            return fail(format!("must be at most {MAX_SECRET_LEN} bytes"));
        }
        if text.contains('\0') {
            return fail("must not contain NUL characters");
        }
    } else {
        if text.len() > MAX_TEXT_LEN {
            return fail(format!("must be at most {MAX_TEXT_LEN} bytes"));
        }
        if text.chars().any(char::is_control) {
            return fail("must not contain control characters or line breaks");
        }
    }
    Ok(())
}

/// One or more PEM `CERTIFICATE` blocks. Text between blocks (bundle
/// comments) is allowed; any other PEM block (a private key!) is refused,
/// since the field is not secret.
pub(crate) fn check_pem_certificates(text: &str) -> Check {
    if text.len() > MAX_PEM_LEN {
        return fail(format!("must be at most {MAX_PEM_LEN} bytes"));
    }
    if text.contains('\0') {
        return fail("must not contain NUL characters");
    }
    let Ok(blocks) = pem::parse_many(text) else {
        return fail("has a PEM block that is not valid (base64 body between matching BEGIN and END lines)");
    };
    if blocks.is_empty() || text.matches("-----BEGIN ").count() != blocks.len() {
        return fail("must be a PEM certificate (-----BEGIN CERTIFICATE----- ...)");
    }
    if blocks.iter().any(|block| block.tag() != "CERTIFICATE") {
        return fail("must contain only CERTIFICATE blocks (never a private key: this field is not secret)");
    }
    // A DER certificate is an ASN.1 SEQUENCE.
    if blocks.iter().any(|block| block.contents().first() != Some(&0x30)) {
        return fail("has a CERTIFICATE block that is not a DER certificate");
    }
    Ok(())
}

/// An absolute `http`/`https` URL with a host and no user info (it would be
/// stored in clear), query or fragment.
pub(crate) fn check_url(text: &str) -> Check {
    if text.len() > MAX_TEXT_LEN || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return fail("must be an http:// or https:// URL without spaces");
    }
    let Ok(url) = url::Url::parse(text) else {
        return fail("must be an http:// or https:// URL");
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return fail("must be an http:// or https:// URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return fail("must not carry a user name or password (use the authentication fields instead)");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return fail("must not have a query string or fragment");
    }
    Ok(())
}

/// A URL path: starts with one `/`, no whitespace or control characters.
pub(crate) fn check_url_path(text: &str) -> Check {
    if !text.starts_with('/') || text.starts_with("//") {
        return fail("must be a path starting with a single '/'");
    }
    if text.len() > MAX_TEXT_LEN
        || text
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return fail("must not contain spaces, backslashes or control characters");
    }
    Ok(())
}

/// A file path for the SQLite driver: relative to `FERRY_SQLITE_DIR`, or
/// absolute (the worker then checks that it lies inside that directory).
/// No `..` components, no URI syntax (`:`, `?`, `#`), no control characters.
pub(crate) fn check_file_path(text: &str) -> Check {
    if text.len() > 4096 {
        return fail("must be at most 4096 bytes");
    }
    if text
        .chars()
        .any(|c| c.is_control() || matches!(c, ':' | '?' | '#' | '\\'))
    {
        return fail("must be a plain file path (no control characters, ':', '?', '#' or '\\')");
    }
    if text.split('/').any(|part| part == "..") {
        return fail("must not contain '..' components");
    }
    if text.ends_with('/') {
        return fail("must name a file, not a directory");
    }
    Ok(())
}

/// Header names that must not be configured: credentials (headers are
/// stored in clear; the `auth_type` fields are sealed) and framing headers
/// that the HTTP client owns.
const REFUSED_HEADERS: &[(&str, &str)] = &[
    ("authorization", "would be stored in clear; use auth_type instead"),
    (
        "proxy-authorization",
        "would be stored in clear; use auth_type instead",
    ),
    (
        "cookie",
        "would be stored in clear; use auth_type api_key instead",
    ),
    ("host", "is set by Ferry"),
    ("content-length", "is set by Ferry"),
    ("transfer-encoding", "is set by Ferry"),
    ("connection", "is set by Ferry"),
];

/// A valid HTTP header field name (RFC 9110 token), at most 256 bytes.
pub(crate) fn is_header_name(name: &str) -> bool {
    name.len() <= 256 && http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// A header value (RFC 9110 field value: no CR, LF, NUL or other control
/// characters but tab), at most 8 KiB. Unicode control characters, which
/// `http` lets through as opaque bytes, are refused too.
pub(crate) fn is_header_value(value: &str) -> bool {
    value.len() <= 8192
        && http::HeaderValue::from_bytes(value.as_bytes()).is_ok()
        && !value.chars().any(|c| c != '\t' && c.is_control())
}

/// Checks one entry of a header map; the reason names the header, which is
/// never secret.
pub(crate) fn check_header(name: &str, value: &str) -> Check {
    if !is_header_name(name) {
        return fail("must map HTTP header names (letters, digits, '-', ...) to strings");
    }
    let lower = name.to_ascii_lowercase();
    if let Some((_, why)) = REFUSED_HEADERS.iter().find(|(refused, _)| *refused == lower) {
        return fail(format!("must not set {name}: it {why}"));
    }
    if !is_header_value(value) {
        return fail(format!(
            "has a value for {name} with line breaks or control characters"
        ));
    }
    Ok(())
}

/// MongoDB URI options Ferry accepts; everything else (file paths such as
/// `tlsCAFile`, `authMechanismProperties`, proxies, ...) is refused. Keys
/// are compared case-insensitively, as MongoDB drivers do.
const MONGO_OPTIONS: &[&str] = &[
    "appname",
    "authmechanism",
    "authsource",
    "compressors",
    "connecttimeoutms",
    "directconnection",
    "heartbeatfrequencyms",
    "journal",
    "loadbalanced",
    "localthresholdms",
    "maxconnecting",
    "maxidletimems",
    "maxpoolsize",
    "maxstalenessseconds",
    "minpoolsize",
    "readconcernlevel",
    "readpreference",
    "readpreferencetags",
    "replicaset",
    "retryreads",
    "retrywrites",
    "serverselectiontimeoutms",
    "sockettimeoutms",
    "srvmaxhosts",
    "srvservicename",
    "ssl",
    "timeoutms",
    "tls",
    "tlsallowinvalidcertificates",
    "tlsallowinvalidhostnames",
    "tlsinsecure",
    "w",
    "waitqueuetimeoutms",
    "wtimeoutms",
    "zlibcompressionlevel",
];

/// Authentication mechanisms that use only the credentials in the string
/// (never the worker's own AWS, Kerberos or cloud identity).
const MONGO_MECHANISMS: &[&str] = &["SCRAM-SHA-1", "SCRAM-SHA-256"];

/// A MongoDB connection string split at its user info.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MongoUri<'a> {
    /// `mongodb://` or `mongodb+srv://`.
    pub scheme: &'a str,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Hosts, path and options: everything after the user info.
    pub rest: &'a str,
}

/// Parses and checks a MongoDB connection string.
///
/// Per the MongoDB URI specification, `@`, `:`, `/`, `?` and `#` inside the
/// user name or password must be percent-encoded; Ferry insists, because the
/// password is located (and redacted) by that rule. An `@` anywhere but
/// between the user info and the hosts is refused (`%40` works everywhere).
pub(crate) fn parse_mongo_uri(text: &str) -> Result<MongoUri<'_>, String> {
    let (scheme, after) = if let Some(after) = text.strip_prefix("mongodb://") {
        ("mongodb://", after)
    } else if let Some(after) = text.strip_prefix("mongodb+srv://") {
        ("mongodb+srv://", after)
    } else {
        return Err("must start with mongodb:// or mongodb+srv://".into());
    };
    if text.len() > MAX_SECRET_LEN || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(authority_end);
    if tail.contains('@') {
        return Err(
            "must percent-encode '@', '/', '?' and '#' in the user name and password (%40, %2F, %3F, %23)"
                .into(),
        );
    }
    if tail.contains('#') {
        return Err("must not have a #fragment".into());
    }
    let (userinfo, hosts, rest) = match authority.split_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts, &after[userinfo.len() + 1..]),
        None => (None, authority, after),
    };
    if hosts.contains('@') {
        return Err("must percent-encode '@' in the user name and password (%40)".into());
    }
    let (user, password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (Some(user), Some(password)),
            None => (Some(info), None),
        },
        None => (None, None),
    };
    if user.is_some_and(str::is_empty) {
        return Err("has an empty user name before '@'".into());
    }
    if password.is_some_and(|p| p.contains(':')) {
        return Err("must percent-encode ':' in the password (%3A)".into());
    }
    check_mongo_hosts(hosts, scheme == "mongodb+srv://")?;
    check_mongo_options(tail)?;
    Ok(MongoUri {
        scheme,
        user,
        password,
        rest,
    })
}

fn check_mongo_hosts(hosts: &str, srv: bool) -> Check {
    if hosts.is_empty() {
        return fail("names no host");
    }
    let list: Vec<&str> = hosts.split(',').collect();
    if srv && (list.len() != 1 || hosts.contains(':')) {
        return fail("must name exactly one host, without a port, after mongodb+srv://");
    }
    for entry in list {
        let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
            let Some((address, after)) = bracketed.split_once(']') else {
                return fail("has an unterminated [IPv6] host");
            };
            if address.parse::<Ipv6Addr>().is_err() {
                return fail("has an invalid [IPv6] host");
            }
            match after {
                "" => (None, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (None, Some(port)),
                    None => return fail("has an invalid [IPv6]:port host"),
                },
            }
        } else {
            match entry.rsplit_once(':') {
                Some((host, port)) => (Some(host), Some(port)),
                None => (Some(entry), None),
            }
        };
        if host.is_some_and(|h| !is_host(h)) {
            return fail("must list hosts as DNS names or IP addresses, each with an optional :port");
        }
        if port.is_some_and(|p| !p.parse::<u16>().is_ok_and(|p| p != 0)) {
            return fail("has a port outside 1..65535");
        }
    }
    Ok(())
}

fn check_mongo_options(tail: &str) -> Check {
    let Some((_, query)) = tail.split_once('?') else {
        return Ok(());
    };
    for pair in query.split(['&', ';']).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let lower = key.to_ascii_lowercase();
        if !MONGO_OPTIONS.contains(&lower.as_str()) {
            let key = if is_header_name(key) { key } else { "(unreadable)" };
            return fail(format!(
                "has option {key}, which Ferry does not accept (no file paths or external identities); \
                 allowed: {}",
                MONGO_OPTIONS.join(", ")
            ));
        }
        if lower == "authmechanism" && !MONGO_MECHANISMS.iter().any(|m| m.eq_ignore_ascii_case(value)) {
            return fail(format!(
                "must use authMechanism {}",
                MONGO_MECHANISMS.join(" or ")
            ));
        }
    }
    Ok(())
}

/// The connection string with its password replaced by [`REDACTED_PASSWORD`];
/// unchanged when it has no password. Something that does not parse is
/// replaced entirely (it should have been refused before).
pub(crate) fn redact_mongo_uri(text: &str) -> String {
    match parse_mongo_uri(text) {
        Ok(MongoUri {
            scheme,
            user: Some(user),
            password: Some(_),
            rest,
        }) => format!("{scheme}{user}:{REDACTED_PASSWORD}@{rest}"),
        Ok(_) => text.to_owned(),
        Err(_) => format!("mongodb://{REDACTED_PASSWORD}"),
    }
}

/// True when `text` is a connection string whose password is the redaction
/// placeholder (a public copy sent back, never a real secret).
pub(crate) fn is_redacted_mongo_uri(text: &str) -> bool {
    parse_mongo_uri(text).is_ok_and(|uri| uri.password == Some(REDACTED_PASSWORD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_dns_names_or_ip_addresses_only() {
        for good in [
            "db.example.com",
            "localhost",
            "10.0.0.5",
            "::1",
            "2001:db8::1",
            "my_db",
            "db.example.com.",
        ] {
            assert!(is_host(good), "{good}");
        }
        for bad in [
            "",
            "/var/run/postgresql",
            "a,b",
            "h host",
            "user@host",
            "host=evil",
            "db.example.com:5432",
            "[::1]",
            "-bad.example.com",
            "a..b",
            "host\n",
            "fe80::1%eth0",
            "http://db",
        ] {
            assert!(!is_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_and_words() {
        assert!(check_word("utf8mb4").is_ok());
        assert!(check_word("utf8;drop").is_err());
        assert!(check_name("xy12345.us-east-1").is_ok());
        assert!(check_name("acct_1Nv0FGQ9RKHgCVdK").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a..b", "a b", "a?b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pem_certificates() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUAA==\n-----END CERTIFICATE-----\n";
        assert!(check_pem_certificates(cert).is_ok());
        let bundle = format!("# Root A\n{cert}\n# Root B\n{cert}");
        assert!(check_pem_certificates(&bundle).is_ok());
        assert!(check_pem_certificates("not a cert").is_err());
        assert!(
            check_pem_certificates("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----").is_err()
        );
        assert!(check_pem_certificates("-----BEGIN CERTIFICATE-----\nMIIB").is_err());
        // Valid base64 that is not DER.
        assert!(
            check_pem_certificates("-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----")
                .is_err()
        );
        let with_key = format!("{cert}-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n");
        assert!(check_pem_certificates(&with_key).is_err());
    }

    #[test]
    fn urls() {
        assert!(check_url("https://api.internal.com").is_ok());
        assert!(check_url("http://localhost:8080/v1/").is_ok());
        for bad in [
            "ftp://x.com",
            "https://user:pw@x.com",
            "https://x.com/?key=1",
            "https://x.com/#a",
            "x.com",
            "https://x\n.com",
            "file:///etc/passwd",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_and_file_paths() {
        assert!(check_url_path("/health").is_ok());
        assert!(check_url_path("/sql/1.0/warehouses/abc").is_ok());
        for bad in ["health", "//evil.com/x", "/a b", "/a\nb"] {
            assert!(check_url_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_file_path("sales/2024.db").is_ok());
        assert!(check_file_path("/srv/ferry/sqlite/x.db").is_ok());
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "x.db\0",
            ":memory:",
            "file:x.db?mode=rwc",
            "dir/",
        ] {
            assert!(check_file_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers() {
        assert!(check_header("X-API-Version", "2024-01-15").is_ok());
        assert!(check_header("Authorization", "Bearer x").is_err());
        assert!(check_header("cookie", "a=b").is_err());
        assert!(check_header("X-A", "a\r\nInjected: 1").is_err());
        assert!(check_header("Bad Name", "v").is_err());
    }

    #[test]
    fn mongo_uris_parse_and_redact() {
        let uri = "mongodb+srv://user:pass@cluster.mongodb.net/";
        assert_eq!(
            redact_mongo_uri(uri),
            "mongodb+srv://user:****@cluster.mongodb.net/"
        );
        assert!(is_redacted_mongo_uri(&redact_mongo_uri(uri)));
        assert!(!is_redacted_mongo_uri(uri));

        let multi = "mongodb://u:p%40ss@h1:27017,h2:27018,[::1]:27019/db?replicaSet=rs0&retryWrites=true";
        assert_eq!(
            redact_mongo_uri(multi),
            "mongodb://u:****@h1:27017,h2:27018,[::1]:27019/db?replicaSet=rs0&retryWrites=true"
        );
        for no_password in [
            "mongodb://h1:27017/db",
            "mongodb://user@h1/db?authMechanism=SCRAM-SHA-256",
        ] {
            assert!(parse_mongo_uri(no_password).is_ok(), "{no_password}");
            assert_eq!(redact_mongo_uri(no_password), no_password);
        }
    }

    #[test]
    fn mongo_uris_with_ambiguous_or_dangerous_parts_are_refused() {
        for bad in [
            "postgres://u:p@h/db",
            "mongodb://u:pa/ss@h/db",
            "mongodb://u:1/x@h/db",
            "mongodb://u:p@ss@h/db",
            "mongodb://u:p@h/db?appName=a@b",
            "mongodb://u:p@h/db?tlsCAFile=/etc/passwd",
            "mongodb://u:p@h/db?authMechanism=MONGODB-AWS",
            "mongodb://u:p@h/db?authMechanismProperties=ENVIRONMENT:azure",
            "mongodb+srv://u:p@h1,h2/db",
            "mongodb+srv://u:p@h1:27017/db",
            "mongodb://u:p@h:0/db",
            "mongodb://u:p@h:99999/db",
            "mongodb://u:p@/db",
            "mongodb://:p@h/db",
            "mongodb://u:p@h /db",
            "mongodb://u:p@h/db#x",
        ] {
            assert!(parse_mongo_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reasons_never_quote_the_value() {
        let secretish = "mongodb://u:hunter2@h/db?tlsCAFile=/x";
        let reason = parse_mongo_uri(secretish).expect_err("refused");
        assert!(!reason.contains("hunter2"), "{reason}");
    }
}
