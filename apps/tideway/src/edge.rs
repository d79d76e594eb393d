//! The gateway's configuration followed at run time: the configuration file, watched
//! with `notify`, applied through the gateway's [`GatewayControl`] whenever it changes.
//!
//! The file is read as at start (defaults → file → `TIDEWAY_*` environment) and only its
//! `gateway` section is applied; the gateway validates and builds it in full before it
//! swaps it in, so a bad edit is logged with the key it names and the running version
//! stays. An edit that changes nothing in the gateway section makes no new version.

use std::path::{Path, PathBuf};

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tideway_gateway::GatewayControl;

use crate::Config;

/// Follows one configuration file for as long as it is kept.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher").finish_non_exhaustive()
    }
}

impl ConfigWatcher {
    /// Watches `file` (through its folder, since editors replace files by renaming) and
    /// applies its gateway section on every change.
    pub fn start(file: &Path, control: GatewayControl) -> anyhow::Result<Self> {
        let file =
            std::path::absolute(file).with_context(|| format!("resolving {}", file.display()))?;
        let folder = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let watched = file.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if event.paths.iter().any(|path| path == &watched) => {
                    if event.kind.is_modify() || event.kind.is_create() {
                        reload(&watched, &control);
                    }
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "cannot watch the configuration file"),
            })
            .context("watching the configuration file")?;
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", folder.display()))?;
        tracing::info!(file = %file.display(), "Following the configuration file.");
        Ok(Self { _watcher: watcher })
    }
}

/// Reads `file` and applies its gateway section if it changed; answers the new version.
pub fn reload(file: &Path, control: &GatewayControl) -> Option<u64> {
    let config = match Config::load(Some(file)) {
        Ok(config) => config,
        Err(err) => {
            tracing::warn!(file = %file.display(), error = %err, "The configuration file was not applied; the running one stays.");
            return None;
        }
    };
    let (_, running) = control.current();
    if running == config.gateway.gateway {
        return None;
    }
    match control.apply(&config.gateway.gateway, "file") {
        Ok(version) => {
            tracing::info!(file = %file.display(), version, "The configuration file was applied.");
            Some(version)
        }
        Err(err) => {
            let detail = match &err {
                tideway_gateway::GatewayError::Invalid(inner) => inner.to_string(),
                other => other.to_string(),
            };
            tracing::warn!(file = %file.display(), error = %detail, "The configuration file was not applied; the running one stays.");
            None
        }
    }
}
