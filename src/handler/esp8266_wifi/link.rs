//! One device's side of the gateway: its current cloud connection, the version
//! it told, the firmware offered to it, and the events the servers see for it.
//! The cloud and ROM servers write here; the device's update reads the events.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use super::user_bin::Slot;

/// Enough for an update's events: downloads report whole percents only.
const EVENTS: usize = 512;

/// What happened to a device, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connection `0` identified itself: the device takes requests on it.
    Ready(u64),
    /// Connection `0` closed.
    Closed(u64),
    /// The ROM server sent `done` of `total` bytes of the device's bin.
    Served { slot: Slot, done: u64, total: u64 },
    /// The device's verdict on the downloaded bin.
    Upgrade {
        success: bool,
        pre_rom_version: String,
        rom_version: String,
    },
    /// The device told its version (activation).
    Version,
}

/// The bins of one version, checked, for the ROM server to hand out.
#[derive(Debug)]
pub struct Offer {
    pub version: String,
    pub user1: (PathBuf, u64),
    pub user2: (PathBuf, u64),
}

impl Offer {
    pub fn file(&self, slot: Slot) -> &(PathBuf, u64) {
        match slot {
            Slot::User1 => &self.user1,
            Slot::User2 => &self.user2,
        }
    }
}

struct Conn {
    generation: u64,
    tx: mpsc::UnboundedSender<String>,
    ready: bool,
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    generations: u64,
    version: Option<String>,
    seen: bool,
    offer: Option<Arc<Offer>>,
}

pub struct Link {
    pub id: String,
    state: Mutex<State>,
    events: broadcast::Sender<LinkEvent>,
}

impl Link {
    pub fn new(id: &str) -> Link {
        Link {
            id: id.to_string(),
            state: Mutex::default(),
            events: broadcast::channel(EVENTS).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LinkEvent> {
        self.events.subscribe()
    }

    pub fn emit(&self, event: LinkEvent) {
        let _ = self.events.send(event);
    }

    /// A new connection speaks for this device (a reconnect replaces the old
    /// one); returns its generation.
    pub fn attach(&self, tx: mpsc::UnboundedSender<String>) -> u64 {
        let mut s = self.state();
        s.generations += 1;
        let generation = s.generations;
        s.conn = Some(Conn {
            generation,
            tx,
            ready: false,
        });
        generation
    }

    /// Connection `generation` identified itself (identify or ping).
    pub fn ready(&self, generation: u64) {
        let mut s = self.state();
        match &mut s.conn {
            Some(c) if c.generation == generation && !c.ready => c.ready = true,
            _ => return,
        }
        s.seen = true;
        drop(s);
        self.emit(LinkEvent::Ready(generation));
    }

    pub fn detach(&self, generation: u64) {
        let mut s = self.state();
        if s.conn.as_ref().is_some_and(|c| c.generation == generation) {
            s.conn = None;
        }
        drop(s);
        self.emit(LinkEvent::Closed(generation));
    }

    /// The generation of the connection that takes requests now.
    pub fn ready_generation(&self) -> Option<u64> {
        self.state()
            .conn
            .as_ref()
            .filter(|c| c.ready)
            .map(|c| c.generation)
    }

    /// Queues `message` on connection `generation`; false when it is gone.
    pub fn send(&self, generation: u64, message: String) -> bool {
        match &self.state().conn {
            Some(c) if c.generation == generation => c.tx.send(message).is_ok(),
            _ => false,
        }
    }

    pub fn version(&self) -> Option<String> {
        self.state().version.clone()
    }

    /// Whether the device identified itself since the start.
    pub fn seen(&self) -> bool {
        self.state().seen
    }

    pub fn set_version(&self, version: &str) {
        self.state().version = Some(version.to_string());
        self.emit(LinkEvent::Version);
    }

    pub fn offer(&self) -> Option<Arc<Offer>> {
        self.state().offer.clone()
    }

    /// Offers `offer` until the returned guard is dropped (the update ended).
    pub fn offer_until_done(self: &Arc<Self>, offer: Arc<Offer>) -> OfferGuard {
        self.state().offer = Some(offer);
        OfferGuard(self.clone())
    }
}

/// Withdraws the offer: the ROM server refuses downloads once the update ended.
pub struct OfferGuard(Arc<Link>);

impl Drop for OfferGuard {
    fn drop(&mut self) {
        self.0.state().offer = None;
    }
}
