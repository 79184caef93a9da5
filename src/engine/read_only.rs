//! The engine for looking only (`fota-agent check`): it reads the state directory
//! as it is and creates nothing, so "check" changes nothing on the gateway.

use std::sync::Arc;

use super::{Engine, EngineError};
use crate::config::{Config, DeviceConfig};
use crate::handler::{self, UpdateHandler};
use crate::source;
use crate::store::Store;

/// A configured device with its handler.
type DeviceWithHandler = (DeviceConfig, Arc<dyn UpdateHandler>);

/// Each configured device with its handler.
pub(super) fn devices_of(config: &Config) -> Result<Vec<DeviceWithHandler>, EngineError> {
    config
        .devices
        .iter()
        .map(|d| Ok((d.clone(), handler::build(d)?)))
        .collect()
}

impl Engine {
    /// The engine the config describes, whose state directory is neither created
    /// nor cleaned; it must not be used to update anything.
    pub fn from_config_read_only(config: &Config) -> Result<Engine, EngineError> {
        let devices = devices_of(config)?;
        let store = Store::at(&config.agent.state_dir);
        let source = source::from_config(config)?;
        Ok(Engine::with_store(
            config.agent.clone(),
            &config.download,
            source,
            devices,
            store,
        )?
        .with_trust(config.trust.clone()))
    }
}
