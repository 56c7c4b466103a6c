//! `roster-spin-compose`: builds `target/spin/roster.wasm`, the component `spin.toml` runs
//! (`spin build` calls it; so does `cargo xtask build-spin`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let root = xtask::workspace_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    match roster_spin_compose::build(&root) {
        Ok(path) => {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            println!("{size:>9} bytes  {}", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("roster-spin-compose: {error}");
            ExitCode::FAILURE
        }
    }
}
