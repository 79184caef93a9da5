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
        // A lock on a version the handler refused: it is offered, so say why
        // it is not installed rather than "not offered".
        if let Some(note) = &mut selection.lock {
            for (version, reason) in &self.vetoed {
                let missing = format!(": version {version} is not offered");
                if let Some(head) = note.strip_suffix(&missing) {
                    *note = format!("{head}: version {version} is refused: {reason}");
                    break;
                }
            }
        }
        selection.refused.splice(0..0, self.vetoed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vetted(vetoed: &[(&str, &str)]) -> Vetted {
        Vetted {
            admitted: Vec::new(),
            vetoed: vetoed
                .iter()
                .map(|(v, r)| (v.to_string(), r.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_lock_on_a_refused_version_says_why() {
        let quarantined = "product id 1234 ≠ configured 4321: quarantined";
        let mut selection = Selection {
            lock: Some("locked to 7: version 7 is not offered".into()),
            ..Selection::default()
        };
        vetted(&[("6", "other"), ("7", quarantined)]).into_selection(&mut selection);
        assert_eq!(
            selection.lock.as_deref(),
            Some(format!("locked to 7: version 7 is refused: {quarantined}").as_str())
        );
        assert!(selection.offered_any);
        assert_eq!(selection.refused.len(), 2);

        // A lock on a version that really is not offered keeps its words.
        let mut selection = Selection {
            lock: Some("locked to 9: version 9 is not offered".into()),
            ..Selection::default()
        };
        vetted(&[("7", quarantined)]).into_selection(&mut selection);
        assert_eq!(
            selection.lock.as_deref(),
            Some("locked to 9: version 9 is not offered")
        );
    }
}
