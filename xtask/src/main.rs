//! `cargo xtask`: Roster's build and test automation.
//!
//! - `cargo xtask run [ARGS...]`: builds (release) and starts the hub on port 3000 with the
//!   embedded store; ARGS go to `roster`.
//! - `cargo xtask test`: every test: the workspace's Rust tests, then the Socket.IO suite
//!   (`tests/socketio`, Node's test runner with the real `socket.io-client`) and the JS
//!   SDK's suite (`clients/js`: its type check and its tests) against a `roster` binary
//!   (installing their npm packages first if they are missing).
//! - `cargo xtask check`: `cargo fmt --check` and `cargo clippy -D warnings`.
//! - `cargo xtask bench [--redis] <SCENARIO> [ARGS...]`: runs one load scenario of
//!   `roster-bench` against a private release `roster` (see `bench.rs`, docs/benchmarks.md).
//! - `cargo xtask build-components [DIR]`: builds the components and copies them to DIR
//!   (default `target/components`) as `presence.wasm`, `metadata.wasm`, `reaper.wasm`,
//!   the layout `roster --components-dir` reads.
//! - `cargo xtask build-spin`: builds the Spin components (`target/spin/roster.wasm` and
//!   `roster-cron.wasm`), what `spin build` does (docs/spin.md).

mod bench;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = xtask::workspace_root(Path::new(env!("CARGO_MANIFEST_DIR")));
    let result = match args.first().map(String::as_str) {
        Some("run") => cargo(
            &root,
            &[
                "run",
                "--release",
                "--package",
                "roster-host",
                "--bin",
                "roster",
                "--",
            ],
            &args[1..],
        ),
        Some("test") => test(&root, &args[1..]),
        Some("check") => check(&root),
        Some("bench") => bench::bench(&root, &args[1..]),
        Some("build-components") => build_components(&root, args.get(1).map(PathBuf::from)),
        Some("build-spin") => cargo(
            &root,
            &[
                "run",
                "--quiet",
                "--locked",
                "--release",
                "--package",
                "roster-spin-compose",
            ],
            &[],
        ),
        _ => {
            eprintln!(
                "usage: cargo xtask <run [ARGS...] | test [ARGS...] | check | bench [compare --other CMD] [--redis] SCENARIO [ARGS...] | build-components [DIR] | build-spin>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

fn cargo(root: &Path, args: &[&str], extra: &[String]) -> Result<(), String> {
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args(args)
        .args(extra)
        .status()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn test(root: &Path, extra: &[String]) -> Result<(), String> {
    cargo(root, &["test", "--workspace", "--locked"], extra)?;
    // Workspace-wide, like the test build, so dependency features unify the same way and
    // nothing is compiled twice.
    cargo(root, &["build", "--locked", "--workspace", "--bins"], &[])?;
    socketio_suite(root)?;
    sdk_suite(root)?;
    pages_suite(root)
}

/// The debug `roster` binary the Node suites run.
fn roster_bin(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("debug")
        .join("roster")
}

/// Installs a Node package's locked dependencies when they are missing.
fn npm_ci(dir: &Path) -> Result<(), String> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir))
}

/// Runs the JS SDK's suite (`npm test`: `tsc --noEmit` on a typed example, then its tests)
/// against the debug `roster` binary.
fn sdk_suite(root: &Path) -> Result<(), String> {
    let sdk = root.join("clients").join("js");
    npm_ci(&sdk)?;
    run(Command::new("npm")
        .arg("test")
        .env("ROSTER_BIN", roster_bin(root))
        .current_dir(&sdk))
}

/// Runs the pages' browser tests (`web/`: the demo and the dashboard in a headless
/// Chromium, driven by puppeteer-core) against the debug `roster` binary. The swap test
/// uploads a fixture component that the cargo tests built.
fn pages_suite(root: &Path) -> Result<(), String> {
    let web = root.join("web");
    npm_ci(&web)?;
    run(Command::new("npm")
        .arg("test")
        .env("ROSTER_BIN", roster_bin(root))
        .env(
            "ROSTER_WASM_DIR",
            xtask::wasm_target_dir(root)
                .join("wasm32-wasip2")
                .join("component"),
        )
        .current_dir(&web))
}

/// Runs the Node suite in `tests/socketio` against the debug `roster` binary.
fn socketio_suite(root: &Path) -> Result<(), String> {
    let suite = root.join("tests").join("socketio");
    npm_ci(&suite)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&suite)
        .map_err(|error| format!("cannot list {}: {error}", suite.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    run(Command::new("node")
        .args(["--test", "--test-concurrency=1"])
        .args(&files)
        .env("ROSTER_BIN", roster_bin(root))
        .current_dir(&suite))
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|error| format!("cannot run {:?}: {error}", command.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({status})"))
    }
}

fn check(root: &Path) -> Result<(), String> {
    cargo(root, &["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )
}

fn build_components(root: &Path, out: Option<PathBuf>) -> Result<(), String> {
    let out = out.unwrap_or_else(|| root.join("target").join("components"));
    let packages: Vec<&str> = xtask::COMPONENTS
        .iter()
        .map(|(_, package)| *package)
        .collect();
    let built = xtask::build_wasm(root, &xtask::wasm_target_dir(root), &packages)?;
    std::fs::create_dir_all(&out)
        .map_err(|error| format!("cannot create {}: {error}", out.display()))?;
    for ((slot, _), path) in xtask::COMPONENTS.iter().zip(built) {
        let target = out.join(format!("{slot}.wasm"));
        std::fs::copy(&path, &target).map_err(|error| {
            format!(
                "cannot copy {} to {}: {error}",
                path.display(),
                target.display()
            )
        })?;
        let size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        println!("{:>9} bytes  {}", size, target.display());
    }
    Ok(())
}
