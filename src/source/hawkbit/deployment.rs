//! `deploymentBase`: which chunk of a deployment goes to which device, and the one
//! place where a DDI deployment becomes the agent's [`Firmware`] and
//! [`Deployment`](crate::model::Deployment).
//!
//! Chunk → device: a device listed in `[source] devices` takes the chunk its
//! selector names (`part:<part>` matches the chunk's `part`, the software module
//! type; `name:<name>` its `name`). A device not listed takes the chunk whose
//! `name` equals its id, or failing that its type. A chunk may go to several
//! devices (identical MCUs); a device takes at most one chunk (the first match).
//! The chunk must have exactly one artifact that is the image, and may have its
//! detached signature beside it as the artifact `<image file name>.minisig`; or
//! it holds an ESP8266 pair, two artifacts named `…user1.bin` and `…user2.bin`
//! (user1 is the image, user2 its `image2` part, verified with it).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use super::state::{DeviceAction, DevicePhase, Saved};
use super::wire::{self, DeploymentBase, HandlingType, MaintenanceWindow};
use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::config::{ChunkSelector, DeviceConfig};
use crate::model::{
    Deployment, Firmware, FirmwareLocation, FirmwarePart, Handling, RequestHeaders, SECOND_IMAGE,
};
use crate::source::server_text;

/// A device's chunk, and why it cannot be installed, if it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub chunk: usize,
    pub problem: Option<String>,
}

/// Each device that takes a chunk.
pub fn assign(
    base: &DeploymentBase,
    devices: &[DeviceConfig],
    selectors: &[(String, ChunkSelector)],
) -> BTreeMap<String, Assigned> {
    let chunks = &base.deployment.chunks;
    let mut out = BTreeMap::new();
    for device in devices {
        let found = match selectors.iter().find(|(id, _)| *id == device.id) {
            Some((_, ChunkSelector::Part(p))) => chunks.iter().position(|c| &c.part == p),
            Some((_, ChunkSelector::Name(n))) => chunks.iter().position(|c| &c.name == n),
            None => chunks
                .iter()
                .position(|c| c.name == device.id)
                .or_else(|| chunks.iter().position(|c| c.name == device.device_type)),
        };
        if let Some(idx) = found {
            let problem = firmware(base, idx, device, &RequestHeaders::default()).err();
            out.insert(
                device.id.clone(),
                Assigned {
                    chunk: idx,
                    problem,
                },
            );
        }
    }
    out
}

/// The chunks as `part/name version`, for a message naming what was offered.
pub fn describe_chunks(base: &DeploymentBase) -> String {
    base.deployment
        .chunks
        .iter()
        .map(|c| {
            let part = shown(server_text::text("part", &c.part), &c.part);
            let name = shown(server_text::title(&c.name), &c.name);
            let version = shown(server_text::version(&c.version), &c.version);
            format!("{part}/{name} {version}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `value` quoted when it passed its check, else the reason it did not.
fn shown(check: Result<(), server_text::TextError>, value: &str) -> String {
    match check {
        Ok(()) => format!("{value:?}"),
        Err(e) => format!("({e})"),
    }
}

/// The server's instructions as the engine's planner understands them.
pub fn instructions(base: &DeploymentBase) -> Deployment {
    let handling = |h: HandlingType| match h {
        HandlingType::Skip => Handling::Skip,
        HandlingType::Attempt => Handling::Attempt,
        HandlingType::Forced => Handling::Forced,
    };
    Deployment {
        id: base.id.clone(),
        download: handling(base.deployment.download),
        update: handling(base.deployment.update),
        maintenance_window_open: base
            .deployment
            .maintenance_window
            .map(|w| w == MaintenanceWindow::Available),
    }
}

/// Chunk `idx` as firmware for `device`: its one artifact's URL (HTTPS link
/// preferred), size and every hash given, downloaded with `headers`.
pub fn firmware(
    base: &DeploymentBase,
    idx: usize,
    device: &DeviceConfig,
    headers: &RequestHeaders,
) -> Result<Firmware, String> {
    let chunk = base
        .deployment
        .chunks
        .get(idx)
        .ok_or_else(|| format!("no chunk {idx}"))?;
    check_text(idx, chunk)?;
    let (signatures, images): (Vec<_>, Vec<_>) = chunk
        .artifacts
        .iter()
        .partition(|a| a.filename.ends_with(".minisig"));
    let is = |a: &wire::Artifact, suffix: &str| a.filename.ends_with(suffix);
    let (artifact, second) = match images.as_slice() {
        [one] => (*one, None),
        [a, b] if is(a, "user1.bin") && is(b, "user2.bin") => (*a, Some(*b)),
        [a, b] if is(b, "user1.bin") && is(a, "user2.bin") => (*b, Some(*a)),
        [] => return Err(format!("chunk {:?} has no artifact", chunk.name)),
        many => {
            return Err(format!(
                "chunk {:?} has {} artifacts; a device takes exactly one image (and its \
                 .minisig), or a …user1.bin / …user2.bin pair",
                chunk.name,
                many.len()
            ));
        }
    };
    let link = |a: &wire::Artifact| {
        a.links
            .download
            .as_ref()
            .or(a.links.download_http.as_ref())
            .map(|l| l.href.clone())
            .ok_or_else(|| format!("artifact {:?} has no download link", a.filename))
    };
    let url = link(artifact)?;
    let signature_name = format!("{}.minisig", artifact.filename);
    let signature_url = match signatures.as_slice() {
        [] => None,
        [sig] if sig.filename == signature_name => Some(link(sig)?),
        _ => {
            return Err(format!(
                "chunk {:?}: the only signature artifact must be {signature_name:?}",
                chunk.name
            ));
        }
    };
    let mut fw = Firmware::new(
        &device.device_type,
        &chunk.version,
        FirmwareLocation::Url(url),
    );
    // An absurd announced size is dropped: the download's own limits apply.
    fw.size = artifact.size.and_then(crate::server_value::size);
    fw.checksums = checksums(&artifact.hashes)
        .map_err(|e| format!("artifact {:?}: {e}", artifact.filename))?;
    fw.model = Some(chunk.part.clone());
    fw.description = Some(format!("{} ({})", chunk.name, artifact.filename));
    fw.deployment = Some(instructions(base));
    fw.download_headers = headers.clone();
    fw.signature_url = signature_url;
    if let Some(second) = second {
        fw.parts.push(FirmwarePart {
            name: SECOND_IMAGE.to_string(),
            location: FirmwareLocation::Url(link(second)?),
            size: second.size,
            checksums: checksums(&second.hashes)
                .map_err(|e| format!("artifact {:?}: {e}", second.filename))?,
        });
    }
    Ok(fw)
}

/// The chunk's version, name, part and file names, before any of them reaches a
/// message or the firmware; the reason names the chunk by its position.
fn check_text(idx: usize, chunk: &wire::Chunk) -> Result<(), String> {
    let refused = |e: server_text::TextError| format!("chunk {}: {e}", idx + 1);
    server_text::version(&chunk.version).map_err(refused)?;
    server_text::title(&chunk.name).map_err(refused)?;
    server_text::text("part", &chunk.part).map_err(refused)?;
    for a in &chunk.artifacts {
        server_text::file_name(&a.filename).map_err(refused)?;
    }
    Ok(())
}

/// Every hash the server gave (SHA-256 first); all are checked.
fn checksums(h: &wire::Hashes) -> Result<Vec<Checksum>, String> {
    [
        (ChecksumAlgorithm::Sha256, &h.sha256),
        (ChecksumAlgorithm::Sha1, &h.sha1),
        (ChecksumAlgorithm::Md5, &h.md5),
    ]
    .into_iter()
    .filter_map(|(a, v)| v.as_ref().filter(|v| !v.is_empty()).map(|v| (a, v)))
    .map(|(a, v)| Checksum::new(a, v).map_err(|e| e.to_string()))
    .collect()
}

impl super::HawkbitSource {
    /// A `deploymentBase` link: fetch it; a new action is mapped onto devices,
    /// remembered and acknowledged (`proceeding`), and the engine asked to cycle;
    /// the action in flight is refreshed (a maintenance window opening, `update`
    /// turning from skip to forced); an action already answered is ignored.
    pub(super) async fn handle_deployment(
        &self,
        href: &str,
        link: Option<&crate::source::EngineLink>,
    ) -> Result<(), crate::api::ApiError> {
        let base: DeploymentBase = self.api.get(href).fetch_json().await?;
        let wake = self.adopt(href, base);
        if wake != Adopted::Nothing {
            self.persist();
            self.flush().await;
            if let Some(link) = link {
                link.check_now();
            }
        }
        Ok(())
    }

    /// Takes a fetched deployment on (see `handle_deployment`), in memory; the
    /// caller saves unless it returns `Nothing`.
    fn adopt(&self, href: &str, base: DeploymentBase) -> Adopted {
        use super::feedback::{close_if_done, enqueue, status};
        use super::state::Action;
        use super::wire::{Execution, Feedback, Finished};

        let mut guard = self.feedback.lock();
        let saved: &mut Saved = &mut guard;
        let base = match self.against_current(saved, base) {
            ControlFlow::Break(adopted) => return adopted,
            ControlFlow::Continue(base) => base,
        };
        let href = href.split(['?', '#']).next().unwrap_or(href).to_string();
        let assigned = assign(&base, &self.devices, &self.config.devices);
        if assigned.is_empty() {
            self.refuse(saved, &href, &base);
            return Adopted::Refused;
        }
        let id = base.id.clone();
        let (devices, lines) = device_actions(&base, assigned);
        tracing::info!(source = "hawkbit", action = %id, "new deployment: {}", lines.join("; "));
        let action = Action {
            base,
            href,
            devices,
            canceling: false,
        };
        let progress = Some(super::wire::Progress {
            cnt: action.done_count(),
            of: action.devices.len() as u32,
        });
        let fb = Feedback::new(
            id,
            status(Execution::Proceeding, Finished::None, progress, lines),
        );
        enqueue(
            saved,
            super::http::sub_url(&action.href, "feedback"),
            fb,
            false,
        );
        saved.action = Some(action);
        close_if_done(saved);
        Adopted::New
    }

    /// Compares a fetched deployment with what is known: one already answered,
    /// or the action in hand (changed or not), ends here; an action in hand
    /// that is not this one is forgotten and this one goes on.
    fn against_current(
        &self,
        saved: &mut Saved,
        base: DeploymentBase,
    ) -> ControlFlow<Adopted, DeploymentBase> {
        if saved.is_done(&format!("action:{}", base.id)) {
            return ControlFlow::Break(Adopted::Nothing);
        }
        match saved.action.as_mut() {
            Some(current) if current.id() == base.id => {
                if current.base != base {
                    tracing::info!(source = "hawkbit", action = %base.id, "deployment changed");
                    current.base = base;
                    return ControlFlow::Break(Adopted::Changed);
                }
                return ControlFlow::Break(Adopted::Nothing);
            }
            Some(old) => {
                tracing::warn!(source = "hawkbit", action = %old.id(),
                    "action replaced by {} on the server; forgetting it", base.id);
                let key = format!("action:{}", old.id());
                saved.mark_done(key);
            }
            None => {}
        }
        ControlFlow::Continue(base)
    }

    /// A deployment no device of this gateway takes: closed as failed at once.
    fn refuse(&self, saved: &mut Saved, href: &str, base: &DeploymentBase) {
        use super::feedback::{enqueue, status};
        use super::wire::{Execution, Feedback, Finished};

        let id = base.id.clone();
        let line = format!(
            "no device of this gateway takes any chunk ({})",
            describe_chunks(base)
        );
        tracing::warn!(source = "hawkbit", action = %id, "{line}");
        let fb = Feedback::new(
            id.clone(),
            status(Execution::Closed, Finished::Failure, None, vec![line]),
        );
        enqueue(saved, super::http::sub_url(href, "feedback"), fb, false);
        saved.action = None;
        saved.mark_done(format!("action:{id}"));
    }
}

/// Each assigned device's part of a new action (offered, or failed at once with
/// its problem), and a line for each to log and report.
fn device_actions(
    base: &DeploymentBase,
    assigned: BTreeMap<String, Assigned>,
) -> (BTreeMap<String, DeviceAction>, Vec<String>) {
    let mut lines = Vec::new();
    let devices = assigned
        .into_iter()
        .map(|(device, a)| {
            let chunk = &base.deployment.chunks[a.chunk];
            let phase = match a.problem {
                None => {
                    lines.push(format!(
                        "{device}: {} {} offered",
                        chunk.name, chunk.version
                    ));
                    DevicePhase::Offered
                }
                Some(problem) => {
                    lines.push(format!("{device}: {problem}"));
                    DevicePhase::Done {
                        outcome: crate::progress::Outcome::Failed(problem.clone()),
                        detail: format!("failed: {problem}"),
                    }
                }
            };
            let d = DeviceAction {
                chunk: a.chunk,
                version: chunk.version.clone(),
                phase,
                step: None,
                sent_percent: None,
            };
            (device, d)
        })
        .collect();
    (devices, lines)
}

/// What taking a deployment on did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adopted {
    Nothing,
    Changed,
    New,
    Refused,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, t: &str) -> DeviceConfig {
        crate::config::tests::minimal_device(id, t, &["u"])
    }

    fn base(chunks: serde_json::Value) -> DeploymentBase {
        serde_json::from_value(serde_json::json!({"id": "3", "deployment": {
            "download": "forced", "update": "attempt", "maintenanceWindow": "unavailable",
            "chunks": chunks}}))
        .unwrap()
    }

    fn chunk(part: &str, name: &str, artifacts: usize) -> serde_json::Value {
        let a = serde_json::json!({"filename": "f.bin", "size": 4,
            "hashes": {"md5": "d41d8cd98f00b204e9800998ecf8427e",
                       "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
            "_links": {"download": {"href": "https://h/f.bin"},
                       "download-http": {"href": "http://h/f.bin"}}});
        serde_json::json!({"part": part, "version": "2.0", "name": name,
            "artifacts": vec![a; artifacts]})
    }

    #[test]
    fn maps_chunks_by_selector_then_id_then_type() {
        let b = base(serde_json::json!([
            chunk("os", "gw-image", 1),
            chunk("bApp", "esp-1", 1),
            chunk("bApp", "mt7681", 1),
            chunk("bApp", "multi", 2),
        ]));
        let devices = [
            device("gw", "linux"),
            device("esp-1", "esp8266"),
            device("wifi-a", "mt7681"),
            device("wifi-b", "mt7681"),
            device("m", "x"),
            device("none", "y"),
        ];
        let selectors = vec![
            ("gw".to_string(), ChunkSelector::Part("os".into())),
            ("m".to_string(), ChunkSelector::Name("multi".into())),
        ];
        let a = assign(&b, &devices, &selectors);
        let ok = |chunk| Assigned {
            chunk,
            problem: None,
        };
        assert_eq!(a["gw"], ok(0));
        assert_eq!(a["esp-1"], ok(1));
        assert_eq!(a["wifi-a"], ok(2));
        assert_eq!(a["wifi-b"], ok(2));
        assert!(a["m"].problem.as_ref().unwrap().contains("2 artifacts"));
        assert!(!a.contains_key("none"));
        assert_eq!(describe_chunks(&b).split(", ").count(), 4);
    }

    #[test]
    fn a_user1_user2_pair_is_one_firmware_with_image2() {
        let mut c = chunk("bApp", "esp", 2);
        let artifacts = c["artifacts"].as_array_mut().unwrap();
        artifacts[0]["filename"] = "light-user2.bin".into();
        artifacts[0]["_links"]["download"]["href"] = "https://h/light-user2.bin".into();
        artifacts[0]["size"] = 7.into();
        artifacts[1]["filename"] = "light-user1.bin".into();
        artifacts[1]["_links"]["download"]["href"] = "https://h/light-user1.bin".into();
        let b = base(serde_json::json!([c]));
        let fw = firmware(&b, 0, &device("d", "t"), &RequestHeaders::default()).unwrap();
        assert_eq!(
            fw.location,
            FirmwareLocation::Url("https://h/light-user1.bin".into())
        );
        assert_eq!(fw.parts.len(), 1);
        let part = &fw.parts[0];
        assert_eq!(part.name, SECOND_IMAGE);
        assert_eq!(
            part.location,
            FirmwareLocation::Url("https://h/light-user2.bin".into())
        );
        assert_eq!((part.size, part.checksums.len()), (Some(7), 2));
    }

    #[test]
    fn converts_to_firmware_with_instructions_and_hashes() {
        let b = base(serde_json::json!([chunk("os", "fw", 1)]));
        let headers = RequestHeaders(vec![("Authorization".into(), "TargetToken s3cret".into())]);
        let fw = firmware(&b, 0, &device("d", "t"), &headers).unwrap();
        assert_eq!(fw.device_type, "t");
        assert_eq!(fw.version, "2.0");
        assert_eq!(fw.location, FirmwareLocation::Url("https://h/f.bin".into()));
        assert_eq!(fw.size, Some(4));
        assert_eq!(fw.checksums[0].algorithm, ChecksumAlgorithm::Sha256);
        assert_eq!(fw.checksums.len(), 2);
        let d = fw.deployment.as_ref().unwrap();
        assert_eq!(
            (d.download, d.update),
            (Handling::Forced, Handling::Attempt)
        );
        assert_eq!(d.maintenance_window_open, Some(false));
        assert!(!format!("{fw:?}").contains("s3cret"), "token in Debug");
    }
}
