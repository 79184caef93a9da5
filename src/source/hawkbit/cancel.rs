//! `cancelAction`: the server withdraws the action in flight. Each of its devices
//! still updating is cancelled through the engine; the answer on
//! `cancelAction/{id}/feedback` is `closed` + `success` when everything stopped or
//! had not started (the offers are dropped, so nothing starts later), and
//! `rejected` when a device's update step is already writing it (stopping could
//! brick it; that update runs to its end and is reported as usual).

use super::HawkbitSource;
use super::feedback::{close_if_done, enqueue, status};
use super::http::sub_url;
use super::state::DevicePhase;
use super::wire::{CancelActionBase, Execution, Feedback, Finished};
use crate::progress::{Outcome, ProgressStep};
use crate::source::{CancelOutcome, EngineLink};

impl HawkbitSource {
    pub(super) async fn handle_cancel(
        &self,
        href: &str,
        link: Option<&EngineLink>,
    ) -> Result<(), crate::api::ApiError> {
        let cancel: CancelActionBase = self.api.get(href).fetch_json().await?;
        let key = format!("cancel:{}", cancel.id);
        let stop = cancel.cancel_action.stop_id.clone();
        let writing = |s: &Option<ProgressStep>| {
            matches!(s, Some(ProgressStep::Updating | ProgressStep::Rebooting))
        };
        let targets: Vec<(String, Option<ProgressStep>)> = {
            let mut saved = self.feedback.lock();
            if saved.is_done(&key) {
                return Ok(());
            }
            match &mut saved.action {
                Some(a) if a.id() == stop => {
                    let targets: Vec<_> = a
                        .devices
                        .iter()
                        .filter(|(_, d)| !matches!(d.phase, DevicePhase::Done { .. }))
                        .map(|(id, d)| (id.clone(), d.step))
                        .collect();
                    // Updates canceled below end with their own events; the
                    // cancel's answer, not those, settles the action.
                    a.canceling = !targets.iter().any(|(_, s)| writing(s));
                    targets
                }
                _ => Vec::new(),
            }
        };
        let mut too_late: Vec<String> = targets
            .iter()
            .filter(|(_, s)| writing(s))
            .map(|(id, _)| id.clone())
            .collect();
        let mut canceled = Vec::new();
        if too_late.is_empty() {
            for (id, _) in &targets {
                let outcome = match link {
                    Some(link) => link.cancel(id).await,
                    None => CancelOutcome::NotRunning,
                };
                match outcome {
                    CancelOutcome::TooLate => too_late.push(id.clone()),
                    CancelOutcome::Canceled | CancelOutcome::NotRunning => {
                        canceled.push(id.clone())
                    }
                }
            }
        }
        self.answer_cancel(href, &cancel, &stop, &targets, &canceled, &too_late);
        self.persist();
        self.flush().await;
        Ok(())
    }

    /// Records what the cancel achieved and queues the answer (in memory; the
    /// caller saves).
    fn answer_cancel(
        &self,
        href: &str,
        cancel: &CancelActionBase,
        stop: &str,
        targets: &[(String, Option<ProgressStep>)],
        canceled: &[String],
        too_late: &[String],
    ) {
        let key = format!("cancel:{}", cancel.id);
        let mut saved = self.feedback.lock();
        if let Some(action) = saved.action.as_mut().filter(|a| a.id() == stop) {
            action.canceling = false;
            for id in canceled {
                if let Some(d) = action.devices.get_mut(id) {
                    d.phase = DevicePhase::Done {
                        outcome: Outcome::Canceled,
                        detail: "canceled".into(),
                    };
                }
            }
        }
        let st = if too_late.is_empty() {
            // The whole action is withdrawn: forget it; no deployment feedback.
            if saved.action.as_ref().is_some_and(|a| a.id() == stop) {
                saved.action = None;
            }
            saved.mark_done(format!("action:{stop}"));
            let details = if targets.is_empty() {
                vec![format!("action {stop}: nothing running here")]
            } else {
                canceled
                    .iter()
                    .map(|id| format!("{id}: canceled"))
                    .collect()
            };
            tracing::info!(source = "hawkbit", action = %stop, "canceled on the server's request");
            status(Execution::Closed, Finished::Success, None, details)
        } else {
            let details = too_late
                .iter()
                .map(|id| {
                    format!("{id}: the update step is writing the device; it cannot be stopped")
                })
                .collect();
            tracing::info!(source = "hawkbit", action = %stop, "cancel rejected: update step running");
            status(Execution::Rejected, Finished::None, None, details)
        };
        saved.mark_done(key);
        let fb = Feedback::new(cancel.id.clone(), st);
        enqueue(&mut saved, sub_url(href, "feedback"), fb, false);
        if !too_late.is_empty() {
            // An update that ended while the cancel ran may have been the last.
            close_if_done(&mut saved);
        }
    }
}
