//! A stand-in for logind on the test's private system bus: it owns
//! `org.freedesktop.login1` and counts `Manager.Reboot` calls in a file, one
//! line each (`interactive=<b>`), as the reboot command of the other tests does.

use std::io::Write;
use std::path::PathBuf;

use zbus::{connection, interface};

struct Manager {
    reboots: PathBuf,
}

#[interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    fn reboot(&self, interactive: bool) -> zbus::fdo::Result<()> {
        let mut f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.reboots)
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        writeln!(f, "interactive={interactive}")
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }
}

/// Serves until the returned connection is dropped.
pub async fn serve(bus: &str, reboots: PathBuf) -> zbus::Connection {
    connection::Builder::address(bus)
        .name("org.freedesktop.login1")
        .serve_at("/org/freedesktop/login1", Manager { reboots })
        .build()
        .await
        .unwrap()
}
