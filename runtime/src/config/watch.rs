//! Watching the config file: it is re-read on an interval and applied when its bytes change.
//! Polling follows the symlink swap a ConfigMap update makes, which file-event APIs miss.

use std::{path::PathBuf, sync::Arc, time::Duration};

use outrigger_core::Shutdown;

use super::Reloader;

/// Re-reads `path` every `interval` and applies it when it changed, until `shutdown`.
pub(crate) async fn watch_file(
    reloader: Arc<Reloader>,
    path: PathBuf,
    interval: Duration,
    shutdown: Shutdown,
) {
    // Start from nothing rather than from a first read: a change made between the initial load
    // and that read would otherwise be missed. An unchanged file is a no-op (same hash).
    let mut last: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            () = shutdown.signalled() => return,
        }
        let now = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                // Mid-swap or briefly missing: keep the live config and look again.
                tracing::debug!(path = %path.display(), error = %e, "config file unreadable");
                continue;
            }
        };
        if last.as_deref() == Some(now.as_slice()) {
            continue;
        }
        last = Some(now.clone());
        let text = String::from_utf8_lossy(&now);
        // Errors are logged and recorded by the reloader.
        if let Ok(Some(version)) = reloader.apply_text(&text).await {
            tracing::info!(path = %path.display(), version, "config file change applied");
        }
    }
}
