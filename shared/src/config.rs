//! Configuration: the `FERRY_*` variables and their matching flags, and
//! their resolution into validated settings before any role starts.
//!
//! Embedded mode (`ferry up`, `ferry token`) may generate its master key and
//! JWT secret into the data directory; the distributed roles (`ferry api`,
//! `ferry worker`, `ferry scheduler`) must be given them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use clap::{Args, ValueEnum};
use secrecy::SecretBox;
pub use secrecy::{ExposeSecret, SecretString};

/// A configuration problem, reported as one line before anything starts.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

type ConfigResult<T> = Result<T, ConfigError>;

/// A string that must never be printed (Debug shows `****`), held as a
/// [`SecretString`] (zeroed when dropped).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings every role shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Directory for embedded-mode state: the SQLite database, local result
    /// objects, and the generated master key and JWT secret.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data", global = true)]
    pub data_dir: PathBuf,

    /// Metadata database: postgres://user@host:port/db or sqlite://path.
    /// Default: sqlite://$FERRY_DATA_DIR/ferry.db.
    #[arg(long, env = "FERRY_DATABASE_URL", global = true)]
    pub database_url: Option<Secret>,

    /// Redis for the distributed queue and events (redis://host:port/db).
    /// Unset: the embedded queue.
    #[arg(long, env = "FERRY_REDIS_URL", global = true)]
    pub redis_url: Option<Secret>,

    /// Where step results are written: file:///path, s3://bucket/prefix,
    /// gs://bucket, az://container. Default: file://$FERRY_DATA_DIR/objects.
    #[arg(long, env = "FERRY_OBJECT_STORE_URL", global = true)]
    pub object_store_url: Option<String>,

    /// Credential vault keys: one or more `kid:base64(32 bytes)`, comma
    /// separated; the first encrypts, all decrypt. Generated into the data
    /// directory in embedded mode; required otherwise.
    #[arg(long, env = "FERRY_MASTER_KEY", hide_env_values = true, global = true)]
    pub master_key: Option<Secret>,

    /// Log format: text or json. Levels follow RUST_LOG (default info).
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Prefix of every Redis key Ferry writes (several deployments or test
    /// runs may share one Redis).
    #[arg(long, env = "FERRY_REDIS_PREFIX", default_value = "ferry", global = true)]
    pub redis_prefix: String,

    /// How long a worker may hold a job without a heartbeat before another
    /// worker takes it over.
    #[arg(long, env = "FERRY_JOB_LEASE", default_value_t = crate::queue::DEFAULT_LEASE.into(), global = true)]
    pub job_lease: humantime::Duration,

    #[command(flatten)]
    pub jwt: JwtArgs,
}

/// JWT verification settings.
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// JWKS endpoint; keys are cached and refetched on an unknown `kid`.
    #[arg(long, env = "FERRY_JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,

    /// Path to a PEM public key (RSA for RS256, P-256 for ES256).
    #[arg(long, env = "FERRY_JWT_PUBLIC_KEY", global = true)]
    pub jwt_public_key: Option<PathBuf>,

    /// Shared HS256 secret (development). Generated into the data directory
    /// in embedded mode when no key source is configured.
    #[arg(long, env = "FERRY_JWT_HS256_SECRET", hide_env_values = true, global = true)]
    pub jwt_hs256_secret: Option<Secret>,

    /// Expected `iss` claim.
    #[arg(long, env = "FERRY_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Expected `aud` claim.
    #[arg(long, env = "FERRY_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// Least interval between JWKS refetches caused by unknown key ids.
    #[arg(long, env = "FERRY_JWT_JWKS_MIN_REFRESH", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub jwt_jwks_min_refresh: Duration,
}

/// Settings of the admin endpoint of the worker and scheduler roles.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Address of /metrics, /healthz and /readyz (port 0 picks a free one).
    #[arg(long, env = "FERRY_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
}

/// Whether a role may generate its secrets into the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Distributed,
}

/// Resolved and validated settings shared by the roles.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub database_url: Secret,
    pub redis_url: Option<Secret>,
    pub object_store_url: String,
    pub master_keys: MasterKeys,
    pub log_format: LogFormat,
    pub redis_prefix: String,
    pub job_lease: Duration,
}

impl Settings {
    /// Validates `args`; in embedded mode creates the data directory and
    /// generates a missing master key into it.
    pub fn resolve(args: &CommonArgs, mode: Mode) -> ConfigResult<Settings> {
        let data_dir = args.data_dir.clone();
        if mode == Mode::Embedded {
            create_private_dir(&data_dir)?;
        }
        let database_url = match &args.database_url {
            Some(url) => url.clone(),
            None => Secret::new(format!("sqlite://{}/ferry.db", data_dir.display())),
        };
        check_database_url(database_url.expose())?;
        if let Some(redis) = &args.redis_url {
            check_url("FERRY_REDIS_URL", redis.expose(), &["redis", "rediss"])?;
        }
        let object_store_url = match &args.object_store_url {
            Some(url) => url.clone(),
            None => format!("file://{}", absolute(&data_dir.join("objects")).display()),
        };
        check_url(
            "FERRY_OBJECT_STORE_URL",
            &object_store_url,
            &["file", "s3", "gs", "az"],
        )?;
        let master_keys = match (&args.master_key, mode) {
            (Some(text), _) => MasterKeys::parse(text.expose())?,
            (None, Mode::Embedded) => {
                let path = data_dir.join("master.key");
                let text = load_or_generate(&path, || {
                    format!(
                        "k1:{}",
                        base64::engine::general_purpose::STANDARD.encode(random_bytes())
                    )
                })?;
                MasterKeys::parse(text.trim())?
            }
            (None, Mode::Distributed) => {
                return Err(ConfigError(
                    "FERRY_MASTER_KEY is required outside `ferry up` (one or more kid:base64(32 bytes), comma separated)"
                        .into(),
                ));
            }
        };
        Ok(Settings {
            mode,
            data_dir,
            database_url,
            redis_url: args.redis_url.clone(),
            object_store_url,
            master_keys,
            log_format: args.log_format,
            redis_prefix: check_prefix(&args.redis_prefix)?,
            job_lease: check_lease(*args.job_lease)?,
        })
    }
}

impl JwtArgs {
    /// JWT settings; in embedded mode with no key source, an HS256 secret
    /// generated into (or read from) the data directory.
    pub fn resolve(&self, mode: Mode, data_dir: &Path) -> ConfigResult<JwtSettings> {
        let mut hs256_secret = self.jwt_hs256_secret.as_ref().map(|s| s.0.clone());
        let has_source =
            hs256_secret.is_some() || self.jwt_public_key.is_some() || self.jwt_jwks_url.is_some();
        if !has_source {
            match mode {
                Mode::Embedded => {
                    let secret = load_or_generate(&data_dir.join("jwt-hs256.secret"), || {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes())
                    })?;
                    hs256_secret = Some(SecretString::from(secret.trim()));
                }
                Mode::Distributed => {
                    return Err(ConfigError(
                        "no JWT key configured: set FERRY_JWT_JWKS_URL, FERRY_JWT_PUBLIC_KEY or FERRY_JWT_HS256_SECRET"
                            .into(),
                    ));
                }
            }
        }
        if let Some(secret) = &hs256_secret
            && secret.expose_secret().len() < 32
        {
            return Err(ConfigError(
                "FERRY_JWT_HS256_SECRET must be at least 32 characters".into(),
            ));
        }
        if let Some(url) = &self.jwt_jwks_url {
            check_url("FERRY_JWT_JWKS_URL", url, &["http", "https"])?;
        }
        if let Some(path) = &self.jwt_public_key
            && !path.is_file()
        {
            return Err(ConfigError(format!(
                "FERRY_JWT_PUBLIC_KEY: no such file {}",
                path.display()
            )));
        }
        Ok(JwtSettings {
            hs256_secret,
            public_key_path: self.jwt_public_key.clone(),
            jwks_url: self.jwt_jwks_url.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            jwks_min_refresh: self.jwt_jwks_min_refresh,
        })
    }
}

/// The credential vault's keys: the first encrypts, all decrypt. The key
/// material is held in [`SecretBox`]es (zeroed when dropped) and never
/// printed: `Debug` shows the key ids only.
pub struct MasterKeys {
    pub keys: Vec<(String, SecretBox<[u8; 32]>)>,
}

impl MasterKeys {
    /// Keys from `(kid, material)` pairs, in order (the first encrypts).
    pub fn new(keys: impl IntoIterator<Item = (String, [u8; 32])>) -> Self {
        MasterKeys {
            keys: keys
                .into_iter()
                .map(|(kid, key)| (kid, SecretBox::new(Box::new(key))))
                .collect(),
        }
    }
}

impl Clone for MasterKeys {
    fn clone(&self) -> Self {
        MasterKeys {
            keys: self
                .keys
                .iter()
                .map(|(kid, key)| (kid.clone(), SecretBox::new(Box::new(*key.expose_secret()))))
                .collect(),
        }
    }
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("MasterKeys").field("kids", &ids).finish()
    }
}

impl MasterKeys {
    /// Parses `kid:base64(32 bytes)[,kid:base64(32 bytes)…]`.
    pub fn parse(text: &str) -> ConfigResult<Self> {
        let mut keys = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, encoded) = entry
                .split_once(':')
                .ok_or_else(|| ConfigError("FERRY_MASTER_KEY entries are kid:base64(32 bytes)".into()))?;
            if kid.is_empty()
                || !kid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError(
                    "FERRY_MASTER_KEY: a key id is letters, digits, - and _".into(),
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| ConfigError(format!("FERRY_MASTER_KEY: key {kid} is not valid base64")))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| ConfigError(format!("FERRY_MASTER_KEY: key {kid} must decode to 32 bytes")))?;
            if keys.iter().any(|(k, _): &(String, [u8; 32])| k == kid) {
                return Err(ConfigError(format!(
                    "FERRY_MASTER_KEY: key id {kid} appears twice"
                )));
            }
            keys.push((kid.to_owned(), key));
        }
        if keys.is_empty() {
            return Err(ConfigError("FERRY_MASTER_KEY is empty".into()));
        }
        Ok(MasterKeys::new(keys))
    }
}

fn check_prefix(prefix: &str) -> ConfigResult<String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
    if ok {
        Ok(prefix.to_owned())
    } else {
        Err(ConfigError(
            "FERRY_REDIS_PREFIX is 1-64 letters, digits, - _ : .".into(),
        ))
    }
}

fn check_lease(lease: Duration) -> ConfigResult<Duration> {
    if lease >= Duration::from_secs(1) {
        Ok(lease)
    } else {
        Err(ConfigError("FERRY_JOB_LEASE must be at least 1s".into()))
    }
}

/// Creates the data directory readable by its owner only (0700). An
/// existing one that others may enter is narrowed to 0700 when this process
/// owns it (otherwise it is left as it is).
pub fn create_private_dir(path: &Path) -> ConfigResult<()> {
    let fail = |e: std::io::Error| {
        ConfigError(format!(
            "cannot create the data directory {}: {e}",
            path.display()
        ))
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(fail)?;
        let metadata = std::fs::metadata(path).map_err(fail)?;
        if metadata.permissions().mode() & 0o077 != 0 {
            let mut permissions = metadata.permissions();
            permissions.set_mode(permissions.mode() & 0o700);
            // Not ours to change (a mounted volume): leave it.
            let _ = std::fs::set_permissions(path, permissions);
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path).map_err(fail)?;
    Ok(())
}

fn random_bytes() -> [u8; 32] {
    rand::random()
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Reads a generated secret file, or creates it (mode 0600) with `make()`.
fn load_or_generate(path: &Path, make: impl FnOnce() -> String) -> ConfigResult<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = make();
            write_private(path, &text)
                .map_err(|e| ConfigError(format!("cannot write {}: {e}", path.display())))?;
            Ok(text)
        }
        Err(e) => Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

fn check_database_url(url: &str) -> ConfigResult<()> {
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    check_url("FERRY_DATABASE_URL", url, &["postgres", "postgresql"]).map_err(|_| {
        ConfigError("FERRY_DATABASE_URL must be postgres://user@host:port/db or sqlite://path".into())
    })
}

fn check_url(name: &str, text: &str, schemes: &[&str]) -> ConfigResult<()> {
    let url = url::Url::parse(text).map_err(|e| ConfigError(format!("{name} is not a valid URL: {e}")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError(format!(
            "{name} must use one of the schemes {}, not {}",
            schemes.join(", "),
            url.scheme()
        )));
    }
    Ok(())
}

/// A URL with its password replaced by `****`, for messages and logs.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("****"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_parse_and_reject() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let keys = MasterKeys::parse(&format!("new:{key}, old:{key}")).expect("valid keys");
        assert_eq!(keys.keys.len(), 2);
        assert_eq!(keys.keys[0].0, "new");
        assert!(MasterKeys::parse("k1:short").is_err());
        assert!(MasterKeys::parse(&format!("k1:{key},k1:{key}")).is_err());
        assert!(!format!("{keys:?}").contains(&key));
        assert!(!format!("{:?}", keys.clone()).contains(&key));
    }

    #[test]
    fn secrets_and_jwt_settings_never_show_their_values_in_debug_output() {
        let secret: Secret = "hunter2-hunter2".parse().expect("infallible");
        assert_eq!(secret.expose(), "hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "****");
        let settings = JwtSettings {
            hs256_secret: Some("a-very-long-hs256-secret-of-40-characters".into()),
            ..JwtSettings::default()
        };
        let text = format!("{settings:?}");
        assert!(!text.contains("a-very-long"), "{text}");
        assert!(text.contains("****"), "{text}");
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact_url("postgres://u:hunter2@h:5432/d"),
            "postgres://u:****@h:5432/d"
        );
    }
}

/// How tokens are verified. At least one key source must be set; several
/// may be set at once (the token's `alg` and `kid` pick the key).
///
/// `Debug` never shows the HS256 secret.
#[derive(Clone, Default)]
pub struct JwtSettings {
    pub hs256_secret: Option<SecretString>,
    pub public_key_path: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The least time between two JWKS fetches triggered by unknown `kid`s.
    pub jwks_min_refresh: Duration,
}

impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "****"))
            .field("public_key_path", &self.public_key_path)
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_min_refresh", &self.jwks_min_refresh)
            .finish()
    }
}
