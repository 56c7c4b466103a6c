//! Compiling components, with a cache of precompiled artifacts so restarts and rollbacks
//! skip Cranelift.
//!
//! An artifact is stored as `<dir>/<engine>/<source sha256>.cwasm` beside a
//! `.cwasm.sha256` of its own bytes. `<engine>` is the engine's precompilation
//! compatibility hash: a build of `roster` with another wasmtime or other settings never
//! reads artifacts it cannot run. A missing, unreadable or corrupt artifact is compiled
//! again; the cache is an optimisation, never a reason to fail.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The SHA-256 of `bytes`, in hex: a component's version id.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled by Cranelift now.
    Compiled,
    /// Loaded from the artifact cache.
    Cached,
}

/// A compiled component, its version id, and how long it took.
pub struct Compiled {
    /// The component.
    pub component: Component,
    /// SHA-256 of the source bytes.
    pub version: String,
    /// Compiled now or loaded from the cache.
    pub origin: Origin,
    /// Milliseconds spent.
    pub millis: f64,
}

/// The artifact cache of one engine.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// The cache under `root` for `engine`'s artifacts (created when first written).
    pub fn new(root: &Path, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ArtifactCache {
            dir: root.join(format!("{:016x}", hasher.finish())),
        }
    }

    fn artifact(&self, version: &str) -> PathBuf {
        self.dir.join(format!("{version}.cwasm"))
    }

    /// The artifact of `version`, if present and intact.
    fn read(&self, version: &str) -> Option<Vec<u8>> {
        let path = self.artifact(version);
        let bytes = std::fs::read(&path).ok()?;
        let expected = std::fs::read_to_string(path.with_extension("cwasm.sha256")).ok()?;
        (sha256_hex(&bytes) == expected.trim()).then_some(bytes)
    }

    /// Stores an artifact; failures are logged and ignored.
    fn write(&self, version: &str, artifact: &[u8]) {
        let path = self.artifact(version);
        let result = std::fs::create_dir_all(&self.dir).and_then(|()| {
            // Write aside and rename, so a reader never sees half an artifact.
            let partial = path.with_extension(format!("cwasm.{}.partial", std::process::id()));
            std::fs::write(&partial, artifact)?;
            std::fs::write(path.with_extension("cwasm.sha256"), sha256_hex(artifact))?;
            std::fs::rename(&partial, &path)
        });
        if let Err(error) = result {
            tracing::warn!(%error, path = %path.display(), "could not cache a compiled component");
        }
    }
}

/// Loads an artifact this process (or an earlier one with the same engine settings) wrote.
///
/// Deserializing runs no verification of the machine code inside, which is why wasmtime
/// marks it unsafe: the bytes must come from `Component::serialize` of a compatible engine.
/// Ours do: they are read only from the cache directory, under the engine's compatibility
/// hash, and only when their SHA-256 matches the one written beside them. wasmtime also
/// checks the artifact's header against the engine and refuses a mismatch.
#[expect(
    unsafe_code,
    reason = "loading our own precompiled artifacts; see the doc comment"
)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see above: the bytes are an intact artifact this engine configuration wrote.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Compiles `bytes` (a component binary), or loads its artifact from `cache`.
pub fn compile(
    engine: &Engine,
    cache: Option<&ArtifactCache>,
    bytes: &[u8],
) -> Result<Compiled, String> {
    let started = Instant::now();
    let version = sha256_hex(bytes);
    if let Some(cache) = cache
        && let Some(artifact) = cache.read(&version)
    {
        match deserialize(engine, &artifact) {
            Ok(component) => {
                return Ok(Compiled {
                    component,
                    version,
                    origin: Origin::Cached,
                    millis: started.elapsed().as_secs_f64() * 1000.0,
                });
            }
            Err(error) => tracing::warn!(%error, %version, "ignoring an unusable cached artifact"),
        }
    }
    let component = Component::new(engine, bytes)
        .map_err(|error| format!("not a valid component: {error:#}"))?;
    if let Some(cache) = cache {
        match component.serialize() {
            Ok(artifact) => cache.write(&version, &artifact),
            Err(error) => tracing::warn!(%error, "could not serialize a compiled component"),
        }
    }
    Ok(Compiled {
        component,
        version,
        origin: Origin::Compiled,
        millis: started.elapsed().as_secs_f64() * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version ids are SHA-256 in hex.
    #[test]
    fn version_ids() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
