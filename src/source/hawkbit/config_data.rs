//! `configData`: the gateway's attributes — the agent's version and each device's
//! type and version (`<device>.type`, `<device>.version`) — PUT in `merge` mode
//! when the server links `configData` and after every completed action (once
//! its closing feedback is delivered, so that this one PUT also answers the
//! attribute request hawkBit makes when an action finishes). Not queued: it is
//! idempotent and sent again whenever it is due and not yet delivered.

use std::collections::BTreeMap;

use reqwest::Method;

use super::HawkbitSource;
use super::feedback::status;
use super::wire::{ConfigData, ConfigMode, Execution, Finished};
use crate::source::DeviceVersion;

/// Whether attributes are due, and what was delivered last.
#[derive(Debug, Default)]
pub struct Pending {
    /// The server asked (its `configData` link).
    pub requested: bool,
    /// An action completed since the last delivery.
    pub due: bool,
    pub url: Option<String>,
    /// A PUT is on its way: a request seen meanwhile is answered by it.
    pub in_flight: bool,
    pub last_sent: Option<BTreeMap<String, String>>,
}

/// The attributes for these device versions.
pub fn attributes(versions: &[DeviceVersion]) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    data.insert(
        "fota_agent.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    for v in versions {
        data.insert(format!("{}.type", v.device_id), v.device_type.clone());
        if let Some(version) = &v.version {
            data.insert(format!("{}.version", v.device_id), version.clone());
        }
    }
    data
}

impl HawkbitSource {
    /// A device now runs `version`: the attributes say so before the engine's
    /// next version report (hawkBit asks for them as soon as the action closes).
    pub(super) fn installed(&self, device: &str, version: &str) {
        let mut inner = self.lock();
        if let Some(v) = inner.versions.iter_mut().find(|v| v.device_id == device) {
            v.version = Some(version.to_string());
        }
    }

    pub(super) async fn config_data_requested(&self, href: &str) {
        {
            let mut inner = self.lock();
            inner.config_data.requested = !inner.config_data.in_flight;
            inner.config_data.url = Some(href.to_string());
        }
        self.send_config_data().await;
    }

    /// Sends the attributes if due and the versions are known.
    pub(super) async fn send_config_data(&self) {
        let (url, data, taken) = {
            let mut inner = self.lock();
            let p = &inner.config_data;
            if !(p.requested || p.due) || inner.versions.is_empty() {
                return;
            }
            // Due after an action: wait until its closing feedback is delivered.
            // hawkBit requests attributes when it receives that feedback, and a PUT
            // sent before it would be followed by a second one for that request.
            if !p.requested && !self.feedback.lock().queue.is_empty() {
                return;
            }
            let url = p
                .url
                .clone()
                .unwrap_or_else(|| format!("{}/configData", self.api.base()));
            let data = attributes(&inner.versions);
            // Taken before the PUT, so the poll loop and the report task never
            // send the same attributes side by side; given back if it fails.
            let taken = (p.requested, p.due);
            inner.config_data.requested = false;
            inner.config_data.due = false;
            inner.config_data.in_flight = true;
            (url, data, taken)
        };
        let body = ConfigData {
            mode: ConfigMode::Merge,
            data: data.clone(),
            status: status(Execution::Closed, Finished::Success, None, Vec::new()),
        };
        let sent = self.api.request(Method::PUT, &url).json(&body).send().await;
        self.lock().config_data.in_flight = false;
        match sent {
            Ok(_) => self.lock().config_data.last_sent = Some(data),
            Err(e) => {
                let mut inner = self.lock();
                inner.config_data.requested |= taken.0;
                inner.config_data.due |= taken.1;
                tracing::warn!(source = "hawkbit", "attributes not delivered: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_name_each_device() {
        let a = attributes(&[
            DeviceVersion {
                device_id: "gw".into(),
                device_type: "linux".into(),
                version: Some("1.0".into()),
            },
            DeviceVersion {
                device_id: "esp-1".into(),
                device_type: "esp8266".into(),
                version: None,
            },
        ]);
        assert_eq!(a["gw.type"], "linux");
        assert_eq!(a["gw.version"], "1.0");
        assert_eq!(a["esp-1.type"], "esp8266");
        assert!(!a.contains_key("esp-1.version"));
        assert!(a.contains_key("fota_agent.version"));
    }
}
