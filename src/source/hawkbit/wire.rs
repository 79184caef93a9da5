//! The DDI JSON exactly as hawkBit sends and expects it (field names as on the
//! wire, camelCase). Nothing here knows about the agent's model: conversion lives
//! in `deployment.rs` (inbound) and `feedback.rs` / `config_data.rs` (outbound).
//! Unknown fields are ignored so that newer servers keep working.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `{"href": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub href: String,
}

/// GET `{tenant}/controller/v1/{controllerId}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ControllerBase {
    #[serde(default)]
    pub config: Option<ControllerConfig>,
    #[serde(rename = "_links", default)]
    pub links: ControllerLinks,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ControllerConfig {
    #[serde(default)]
    pub polling: Option<Polling>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Polling {
    /// `HH:MM:SS`.
    pub sleep: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ControllerLinks {
    #[serde(rename = "deploymentBase")]
    pub deployment_base: Option<Link>,
    #[serde(rename = "configData")]
    pub config_data: Option<Link>,
    #[serde(rename = "cancelAction")]
    pub cancel_action: Option<Link>,
}

/// GET `deploymentBase/{actionId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentBase {
    pub id: String,
    pub deployment: Deployment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub download: HandlingType,
    pub update: HandlingType,
    #[serde(
        rename = "maintenanceWindow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub maintenance_window: Option<MaintenanceWindow>,
    #[serde(default)]
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandlingType {
    Skip,
    Attempt,
    Forced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceWindow {
    Available,
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub part: String,
    pub version: String,
    pub name: String,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub filename: String,
    #[serde(default)]
    pub hashes: Hashes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(rename = "_links", default)]
    pub links: ArtifactLinks,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactLinks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<Link>,
    #[serde(
        rename = "download-http",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub download_http: Option<Link>,
}

/// GET `cancelAction/{actionId}`.
#[derive(Debug, Clone, Deserialize)]
pub struct CancelActionBase {
    pub id: String,
    #[serde(rename = "cancelAction")]
    pub cancel_action: CancelAction,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CancelAction {
    #[serde(rename = "stopId")]
    pub stop_id: String,
}

/// POST `deploymentBase/{id}/feedback` and `cancelAction/{id}/feedback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// The action id (older servers require it; newer ones ignore it).
    pub id: String,
    /// When the event happened, in milliseconds since the epoch: feedback may be
    /// delivered late (after an outage or a restart), and hawkBit's action history
    /// should show the event's time, not the arrival (its `DdiActionFeedback`
    /// defaults to the arrival only when this is missing).
    #[serde(default)]
    pub timestamp: u64,
    pub status: Status,
}

impl Feedback {
    /// Feedback for action `id`, stamped with the current time.
    pub fn new(id: String, status: Status) -> Feedback {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Feedback {
            id,
            timestamp,
            status,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub execution: Execution,
    pub result: ResultT,
    pub details: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultT {
    pub finished: Finished,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub cnt: u32,
    pub of: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    Closed,
    Proceeding,
    Canceled,
    Scheduled,
    Rejected,
    Resumed,
    Downloaded,
    Download,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    Success,
    Failure,
    None,
}

/// PUT `configData`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigData {
    pub mode: ConfigMode,
    pub data: BTreeMap<String, String>,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigMode {
    Merge,
    Replace,
    Remove,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ddi_documentation_examples() {
        let base: ControllerBase = serde_json::from_str(
            r#"{"config":{"polling":{"sleep":"12:00:00"}},
                "_links":{"deploymentBase":{"href":"https://h/T/controller/v1/c/deploymentBase/5?c=-2"},
                          "configData":{"href":"https://h/T/controller/v1/c/configData"}}}"#,
        )
        .unwrap();
        assert_eq!(
            base.config.unwrap().polling.unwrap().sleep.unwrap(),
            "12:00:00"
        );
        assert!(
            base.links
                .deployment_base
                .unwrap()
                .href
                .ends_with("/5?c=-2")
        );
        assert!(base.links.cancel_action.is_none());

        let d: DeploymentBase = serde_json::from_str(
            r#"{"id":"8","deployment":{"download":"forced","update":"attempt",
                "maintenanceWindow":"unavailable","chunks":[{"part":"os","version":"1.2",
                "name":"fw","artifacts":[{"filename":"a.bin","hashes":{"sha1":"s1","md5":"m",
                "sha256":"s2"},"size":3,"_links":{"download-http":{"href":"http://x/a"}}}]}]},
                "actionHistory":{"status":"RUNNING","messages":[]}}"#,
        )
        .unwrap();
        assert_eq!(d.deployment.update, HandlingType::Attempt);
        assert_eq!(
            d.deployment.maintenance_window,
            Some(MaintenanceWindow::Unavailable)
        );
        assert_eq!(d.deployment.chunks[0].artifacts[0].size, Some(3));

        let c: CancelActionBase =
            serde_json::from_str(r#"{"id":"9","cancelAction":{"stopId":"8"}}"#).unwrap();
        assert_eq!(c.cancel_action.stop_id, "8");
    }

    #[test]
    fn feedback_serialises_as_ddi_expects() {
        let f = Feedback {
            id: "8".into(),
            timestamp: 1733218554123,
            status: Status {
                execution: Execution::Proceeding,
                result: ResultT {
                    finished: Finished::None,
                    progress: Some(Progress { cnt: 1, of: 2 }),
                },
                details: vec!["x".into()],
            },
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"id":"8","timestamp":1733218554123u64,"status":{"execution":"proceeding",
                "result":{"finished":"none","progress":{"cnt":1,"of":2}},"details":["x"]}})
        );
    }
}
