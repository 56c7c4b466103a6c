//! Building guest crates for `wasm32-wasip2`, shared by `cargo xtask` and the build scripts
//! of `roster-host` (which embeds the four components) and `roster-tests` (which loads
//! the test fixtures).
//!
//! A build script cannot ask its own cargo for another target, so it runs a nested
//! `cargo build` with a target directory of its own (`target/wasm`): the nested and outer
//! builds never wait on each other's locks.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target guests are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The cargo profile guests are built with (defined in the workspace `Cargo.toml`).
pub const WASM_PROFILE: &str = "component";

/// The components the host embeds: (slot name, package).
pub const COMPONENTS: [(&str, &str); 4] = [
    ("presence", "roster-presence"),
    ("metadata", "roster-metadata"),
    ("reaper", "roster-reaper"),
    ("policy", "roster-policy"),
];

/// The workspace root, from any member's manifest directory.
pub fn workspace_root(manifest_dir: &Path) -> PathBuf {
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("rust-toolchain.toml").is_file())
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// Where guest builds go: `$CARGO_TARGET_DIR/wasm`, else `<root>/target/wasm`.
pub fn wasm_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm")
}

/// The file a guest package builds to.
pub fn wasm_path(target_dir: &Path, package: &str) -> PathBuf {
    target_dir
        .join(WASM_TARGET)
        .join(WASM_PROFILE)
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// Builds `packages` for [`WASM_TARGET`] with the [`WASM_PROFILE`] profile into
/// `target_dir`, returning each package's `.wasm` path in order.
///
/// Variables that cargo sets for build scripts and that would leak into the nested build
/// (host rustflags, clippy's wrapper, the outer profile) are removed.
pub fn build_wasm(
    root: &Path,
    target_dir: &Path,
    packages: &[&str],
) -> Result<Vec<PathBuf>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args([
            "build",
            "--locked",
            "--target",
            WASM_TARGET,
            "--profile",
            WASM_PROFILE,
        ])
        .arg("--target-dir")
        .arg(target_dir);
    for package in packages {
        command.args(["--package", package]);
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PROFILE_RELEASE_LTO",
    ] {
        command.env_remove(var);
    }
    let output = command
        .output()
        .map_err(|error| format!("could not run cargo to build {packages:?}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "building {packages:?} for {WASM_TARGET} failed (is the target installed? \
             `rustup target add {WASM_TARGET}`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(packages
        .iter()
        .map(|package| wasm_path(target_dir, package))
        .collect())
}
