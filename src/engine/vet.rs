//! Offers the device's handler refuses before download (see
//! [`crate::handler::UpdateHandler::vet`]): kept out of the decision, their
//! reasons shown by `check` and logged by `run` like any other refusal.

use super::Device;
use super::decide::Selection;
use crate::model::Firmware;

/// Offers of other types are left to `decide`, which refuses them by type.
pub(super) struct Vetted {
    pub admitted: Vec<Firmware>,
    /// (version, reason) of each offer the handler refused.
    pub vetoed: Vec<(String, String)>,
}

/// Asks the handler about each offer of the device's type.
pub(super) async fn vet(device: &Device, offered: Vec<Firmware>) -> Vetted {
    let mut vetted = Vetted {
        admitted: Vec::with_capacity(offered.len()),
        vetoed: Vec::new(),
    };
    for fw in offered {
        let verdict = if fw.device_type == device.config.device_type {
            device.handler.vet(&fw).await
        } else {
            Ok(())
        };
        match verdict {
            Ok(()) => vetted.admitted.push(fw),
            Err(reason) => vetted.vetoed.push((fw.version.clone(), reason)),
        }
    }
    vetted
}

impl Vetted {
    /// Puts the handler's refusals first in `selection`; an offer refused so
    /// still counts as offered (the device is up to date, not unknown).
    pub fn into_selection(self, selection: &mut Selection) {
        if self.vetoed.is_empty() {
            return;
        }
        selection.offered_any = true;
        selection.refused.splice(0..0, self.vetoed);
    }
}
