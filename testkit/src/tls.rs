//! A certificate authority of the test's own, made with the `openssl`
//! command: a CA certificate to trust and a `localhost` server
//! certificate it signed (for `localhost` and 127.0.0.1), for servers on
//! 127.0.0.1 that clients reach over verified TLS.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use tempfile::TempDir;

use crate::run;

/// The CA and server certificate, as PEM files in a directory removed on
/// drop.
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    /// Makes a fresh CA (P-256, two days) and a server certificate it
    /// signed for `localhost` and 127.0.0.1.
    pub fn new() -> TestCa {
        Self::with("Ferry Test CA", &["DNS:localhost", "IP:127.0.0.1"])
    }

    /// A fresh CA named `ca_name` and a server certificate (`CN=localhost`)
    /// it signed for the subject alternative names `names`
    /// (`DNS:…`, `IP:…`).
    pub fn with(ca_name: &str, names: &[&str]) -> TestCa {
        let ca_subject = format!("/CN={ca_name}");
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let openssl = |args: &[&str], what: &str| {
            run(Command::new("openssl").args(args).current_dir(root), what);
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            &ca_subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&args, "openssl CA");
        let mut args = vec!["req", "-new"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&args, "openssl server key");
        std::fs::write(
            root.join("server.ext"),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                names.join(",")
            ),
        )
        .expect("ext file");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
            "openssl sign",
        );
        TestCa { dir }
    }

    /// The CA certificate (PEM) clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server certificate (PEM) and its private key.
    pub fn server_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        )
    }

    /// A rustls server configuration presenting the server certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = self.server_files();
        let chain = CertificateDer::pem_file_iter(cert)
            .expect("server certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_file(key).expect("server key");
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server certificate and key");
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
