//! Watching a components directory: a changed `presence.wasm`, `metadata.wasm`,
//! `reaper.wasm` or `policy.wasm` is swapped in (`ROSTER_WATCH_COMPONENTS`).
//!
//! The directory is polled every [`POLL`]: a file whose modification time or size changed
//! is read, and swapped in when its content differs from the version serving. A file read
//! half-written fails to compile and is refused (the old version keeps serving); the
//! finished write changes the file again and is picked up then. Writing to a temporary
//! name and renaming avoids the noise.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::cache::sha256_hex;
use super::{Runtime, SlotName, slot_file};

/// How often the directory is looked at.
pub const POLL: Duration = Duration::from_millis(500);

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Polls `dir` until `shutdown`, swapping in changed components.
pub async fn watch(runtime: &Runtime, dir: &Path, shutdown: CancellationToken) {
    // Nothing is taken as seen: the first pass compares each file's content with the version
    // serving, so a file replaced between start-up and now is not missed.
    let mut seen: HashMap<SlotName, Option<(SystemTime, u64)>> = HashMap::new();
    tracing::info!(dir = %dir.display(), "watching for component changes");
    let mut interval = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        for slot in SlotName::ALL {
            let path = slot_file(dir, slot);
            let now = stamp(&path);
            if now.is_none() || seen.get(&slot) == Some(&now) {
                continue;
            }
            seen.insert(slot, now);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(%slot, path = %path.display(), %error, "cannot read a changed component");
                    continue;
                }
            };
            if sha256_hex(&bytes) == runtime.current_version(slot) {
                continue;
            }
            match runtime.swap(slot, bytes, path.display().to_string()).await {
                Ok(swapped) => {
                    tracing::info!(%slot, version = %swapped.version, swap_ms = swapped.swap_ms, "swapped in a changed component file")
                }
                Err(why) => {
                    tracing::warn!(%slot, reason = %why, "refused a changed component file; the current version keeps serving")
                }
            }
        }
    }
}
