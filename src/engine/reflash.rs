//! A device left half-written is flashed again, not abandoned. When an update
//! fails (or is interrupted by a restart) after the handler's commit point, the
//! device may run nothing but its recovery firmware (an MT7681 answers
//! `IoT_REC_…`, an ESP8266 or an XMODEM bootloader nothing at all), so the
//! version rules can no longer pick firmware for it. The agent knows better from
//! its own record: the device "needs re-flash", and the next cycles write the
//! same verified image again (up to [`MAX_ATTEMPTS`] times), whatever version
//! the device reports.

use std::sync::Arc;

use super::claim::Running;
use super::update::Mode;
use super::{Device, Engine, fetch};
use crate::model::{Firmware, FirmwareLocation};
use crate::progress::Outcome;
use crate::store::{InFlight, Reflash};

/// Failed re-flashes after which the agent stops trying by itself (an operator
/// can still `install`; the device keeps showing "needs re-flash").
pub const MAX_ATTEMPTS: u32 = 3;

/// The re-flash record after an update of `version` ended with `outcome`:
/// cleared by a success; made (or kept) when the device was written and the
/// update did not succeed; counted up when a re-flash itself failed.
pub(super) fn next_record(
    previous: Option<Reflash>,
    in_flight: Option<&InFlight>,
    outcome: &Outcome,
    was_reflash: bool,
) -> Option<Reflash> {
    let reason = match outcome {
        Outcome::Success => return None,
        Outcome::Failed(r) => r.clone(),
        Outcome::Canceled => "canceled".to_string(),
    };
    let tried = u32::from(was_reflash);
    match in_flight {
        Some(f) if f.written => f.sha256.clone().map(|sha256| Reflash {
            attempts: previous
                .filter(|r| r.version == f.version)
                .map_or(0, |r| r.attempts)
                + tried,
            version: f.version.clone(),
            sha256,
            parts: f.parts.clone(),
            reason,
        }),
        // Not written this time: the device is as it was.
        _ => previous.map(|r| Reflash {
            attempts: r.attempts + tried,
            ..r
        }),
    }
}

impl Engine {
    /// Re-flashes the device if its record says it is half-written; `None`
    /// when there is nothing to re-flash (or the attempts are used up).
    pub(super) async fn reflash(
        &self,
        device: &Arc<Device>,
        claim: &Running,
    ) -> Option<(String, Option<Outcome>)> {
        let id = &device.config.id;
        let record = self.store().load(id).ok()?.reflash?;
        if record.attempts >= MAX_ATTEMPTS {
            tracing::warn!(device = %id, firmware_version = %record.version,
                "needs re-flash; {MAX_ATTEMPTS} attempts failed, waiting for an operator");
            return None;
        }
        tracing::warn!(device = %id, firmware_version = %record.version,
            "left half-written ({}); writing the same image again", record.reason);
        let path = fetch::image_path(&self.store().downloads_dir(), id);
        let firmware = Firmware::new(
            &device.config.device_type,
            &record.version,
            FirmwareLocation::File(path),
        );
        let outcome = match self.start(device, &firmware, Mode::Reflash, claim).await {
            Ok(o) => o,
            Err(e) => Some(Outcome::Failed(e.to_string())),
        };
        Some((record.version, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Phase;

    fn flight(written: bool) -> InFlight {
        InFlight {
            version: "2.0".into(),
            phase: Phase::Update,
            started_at: 1,
            process: None,
            written,
            sha256: Some("ab".into()),
            parts: Vec::new(),
        }
    }

    #[test]
    fn written_and_not_successful_needs_a_reflash() {
        let failed = Outcome::Failed("cut".into());
        let r = next_record(None, Some(&flight(true)), &failed, false).unwrap();
        assert_eq!((r.version.as_str(), r.attempts), ("2.0", 0));
        assert_eq!(
            next_record(None, Some(&flight(false)), &failed, false),
            None
        );
        let again = next_record(Some(r.clone()), Some(&flight(false)), &failed, true);
        assert_eq!(again.unwrap().attempts, 1);
        assert_eq!(
            next_record(Some(r), Some(&flight(true)), &Outcome::Success, true),
            None
        );
    }
}
