//! Builds the three components for `wasm32-wasip2` and hands their paths to the crate, which
//! embeds them: `cargo build -p roster-host` alone yields a complete `roster` binary. The root
//! `Cargo.toml` is watched because it holds the `component` profile.

use std::path::PathBuf;

fn main() -> Result<(), String> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = xtask::workspace_root(&manifest_dir);
    for watched in ["components", "wit", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let packages: Vec<&str> = xtask::COMPONENTS
        .iter()
        .map(|(_, package)| *package)
        .collect();
    let paths = xtask::build_wasm(&root, &xtask::wasm_target_dir(&root), &packages)?;
    for ((slot, _), path) in xtask::COMPONENTS.iter().zip(paths) {
        println!(
            "cargo:rustc-env=ROSTER_{}_WASM={}",
            slot.to_uppercase(),
            path.display()
        );
    }
    Ok(())
}
