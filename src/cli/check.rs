//! `fota-agent check`: each device's status and what it would get.

use std::path::Path;
use std::process::ExitCode;

use fota_agent::engine::installed;

pub async fn check(config: &Path) -> anyhow::Result<ExitCode> {
    let config = super::load(config)?;
    // Looking changes nothing: no state directory is created.
    let engine = fota_agent::engine::Engine::from_config_read_only(&config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
    println!("source: {}", engine.source_description());
    let mut ok = true;
    for r in engine.check().await {
        let would_get = r
            .selection
            .candidate
            .as_ref()
            .map_or("-".to_string(), |f| f.version.clone());
        println!(
            "{:<16} type={:<16} current={:<12} status={:<17} would get={}",
            r.device_id,
            r.device_type,
            installed::describe(r.current_version.as_deref(), r.installed_by_agent),
            r.status.to_string(),
            would_get
        );
        if let Some(lock) = &r.selection.lock {
            println!("{:<16}   {lock}", "");
        }
        for (version, reason) in &r.selection.refused {
            println!("{:<16}   not {version}: {reason}", "");
        }
        if let Some(e) = &r.error {
            ok = false;
            println!("{:<16}   error: {e}", "");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
