//! Builds the test fixtures (misbehaving components) for `wasm32-wasip2`, and the Spin
//! component (`target/spin/roster.wasm`, what `spin.toml` runs), and hands their paths to
//! the tests.

use std::path::PathBuf;

/// Fixture packages: (environment variable, package).
const FIXTURES: [(&str, &str); 4] = [
    (
        "ROSTER_FIXTURE_CHAOS_PRESENCE",
        "roster-fixture-chaos-presence",
    ),
    ("ROSTER_FIXTURE_PRESENCE_V2", "roster-fixture-presence-v2"),
    ("ROSTER_FIXTURE_ALWAYS_TRAP", "roster-fixture-always-trap"),
    (
        "ROSTER_FIXTURE_POLICY_PUBLIC_ONLY",
        "roster-fixture-policy-public-only",
    ),
];

fn main() -> Result<(), String> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = xtask::workspace_root(&manifest_dir);
    for watched in [
        "components",
        "wit",
        "tests/fixtures",
        "spin",
        "wire",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let packages: Vec<&str> = FIXTURES.iter().map(|(_, package)| *package).collect();
    let paths = xtask::build_wasm(&root, &xtask::wasm_target_dir(&root), &packages)?;
    for ((var, _), path) in FIXTURES.iter().zip(paths) {
        println!("cargo:rustc-env={var}={}", path.display());
    }
    let spin = roster_spin_compose::build(&root)?;
    println!("cargo:rustc-env=ROSTER_SPIN_WASM={}", spin.display());
    println!(
        "cargo:rustc-env=ROSTER_SPIN_CRON_WASM={}",
        roster_spin_compose::cron_artifact(&root).display()
    );
    Ok(())
}
