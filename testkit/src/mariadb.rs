//! MariaDB: fresh databases with a password user on the shared server
//! (127.0.0.1:3306). Setup runs as root through the server's socket, as
//! root has no password there and cannot log in over TCP.

use std::process::{Command, Stdio};

use crate::run;

/// The shared server's socket, where root logs in.
pub const SOCKET: &str = "/run/mysqld/mysqld.sock";
pub const PORT: u16 = 3306;

/// Runs SQL as root through the socket; its output (`-N -B`).
pub fn mariadb(sql: &str) -> String {
    run(
        Command::new("mariadb").args(["--socket", SOCKET, "-u", "root", "-N", "-B", "-e", sql]),
        "mariadb (is it running? scripts/services.sh)",
    )
}

/// What the fixture's user may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Its database only.
    Database,
    /// Every database whose name starts with the fixture's (so that a
    /// missing one is error 1049, not 1044).
    Prefix,
}

/// A fresh database and a user of the same name with a password; both
/// dropped on drop.
#[derive(Debug)]
pub struct MariaDatabase {
    pub name: String,
    pub password: String,
}

impl MariaDatabase {
    pub fn create(prefix: &str, grant: Grant) -> MariaDatabase {
        let name = crate::unique(prefix);
        let password = format!("pw-{}", crate::unique("secret"));
        let on = match grant {
            Grant::Database => name.clone(),
            Grant::Prefix => format!("{}%", name.replace('_', "\\_")),
        };
        mariadb(&format!(
            "CREATE DATABASE `{name}`; CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; \
             GRANT ALL ON `{on}`.* TO '{name}'@'%';"
        ));
        MariaDatabase { name, password }
    }
}

impl Drop for MariaDatabase {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["--socket", SOCKET, "-u", "root", "-e"])
            .arg(format!(
                "DROP DATABASE IF EXISTS `{0}`; DROP USER IF EXISTS '{0}'@'%';",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
