//! The one gateway-wide server pair all `esp8266-wifi` devices share: the cloud
//! port and the ROM download port, each bound once per address, and the table
//! of device keys to devices that both servers look up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OnceCell;

use super::link::Link;
use super::{cloud, rom};
use crate::handler::HandlerError;

type Addresses = (SocketAddr, SocketAddr);

pub struct Gateway {
    cloud: SocketAddr,
    rom: SocketAddr,
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// The bind result, once: every device of the gateway sees the same error.
    started: OnceCell<Result<(), String>>,
}

impl Gateway {
    /// The gateway serving `cloud` and `rom` in this process.
    pub fn shared(cloud: SocketAddr, rom: SocketAddr) -> Arc<Gateway> {
        static ALL: OnceLock<Mutex<HashMap<Addresses, Arc<Gateway>>>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        all.entry((cloud, rom))
            .or_insert_with(|| {
                Arc::new(Gateway {
                    cloud,
                    rom,
                    links: Mutex::default(),
                    started: OnceCell::new(),
                })
            })
            .clone()
    }

    /// The device whose frames carry `key` (a device already registered under
    /// the same key keeps it; the key is the device's identity on the wire).
    pub fn register(&self, key: &str, id: &str) -> Arc<Link> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let link = links
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Link::new(id)));
        if link.id != id {
            tracing::error!(device = %id, other = %link.id,
                "two devices have the same esp8266-wifi key; only {} is served", link.id);
        }
        link.clone()
    }

    pub fn link(&self, key: &str) -> Option<Arc<Link>> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.get(key).cloned()
    }

    /// Binds both ports and starts serving, once; later calls return the first
    /// call's result.
    pub async fn start(self: &Arc<Self>) -> Result<(), HandlerError> {
        let result = self
            .started
            .get_or_init(|| async {
                let bind = |addr: SocketAddr, what: &'static str| async move {
                    TcpListener::bind(addr)
                        .await
                        .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
                };
                let cloud = bind(self.cloud, "cloud port").await?;
                let rom = bind(self.rom, "ROM download port").await?;
                tracing::info!(cloud = %self.cloud, rom = %self.rom, "esp8266-wifi gateway listening");
                tokio::spawn(accept(cloud, self.clone(), "cloud", cloud::connection));
                tokio::spawn(accept(rom, self.clone(), "ROM", rom::request));
                Ok(())
            })
            .await;
        result
            .clone()
            .map_err(|e| HandlerError::failed("gateway", e))
    }
}

/// Serves every connection to `listener` on its own task with `serve`.
async fn accept<F, Fut>(listener: TcpListener, gateway: Arc<Gateway>, port: &'static str, serve: F)
where
    F: Fn(TcpStream, Arc<Gateway>) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let served = serve(stream, gateway.clone());
                tokio::spawn(async move {
                    if let Err(e) = served.await {
                        tracing::debug!(%peer, "esp8266-wifi {port} connection: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("esp8266-wifi {port} port: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
