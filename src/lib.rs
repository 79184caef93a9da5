//! fota-agent: a device-side firmware update agent for Linux gateways.
//!
//! A [`source`] says what firmware exists; the [`engine`] decides, fetches and
//! verifies it into the state directory and hands a [`handler::VerifiedImage`] to the
//! device's [`handler`]; [`progress`] flows back as events. See
//! ARCHITECTURE.md for the map.

pub mod api;
pub mod checksum;
pub mod config;
pub mod download;
pub mod engine;
pub mod handler;
pub mod logging;
pub mod model;
pub mod persist;
pub mod progress;
pub mod resident;
pub mod schedule;
pub mod secret_eq;
pub mod serial;
pub mod server_value;
pub mod source;
pub mod state_lock;
pub mod status;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod trust;
pub mod version;
