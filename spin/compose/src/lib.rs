//! Roster's Spin component, composed at build time.
//!
//! Spin wires component dependencies only to the main component's imports, so the chain is
//! composed before Spin sees it: the gateway (`roster-spin-gateway`) imports `presence`,
//! `metadata` and `messages` (both exported by the metadata component), `reaper` and
//! `policy`; the first three components import `store` and `events`, which the
//! adapter (`roster-spin-adapter`) exports over Spin's Redis (the policy imports nothing). The result imports only WASI and
//! `fermyon:spin/*@2.0.0`, and exports `wasi:http/incoming-handler`.
//!
//! The cron variant is composed the same way from `roster-spin-cron` (which imports only
//! `reaper`), the reaper component and the adapter; it exports `handle-cron-event`.
//!
//! The four components are built exactly as the host's build script builds them (same
//! packages, profile and target directory, in their own cargo invocation so that no other
//! package's features leak into theirs) and embedded byte for byte: the composition defines
//! each as a nested component with its raw bytes.

use std::path::{Path, PathBuf};

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

/// The gateway package.
pub const GATEWAY: &str = "roster-spin-gateway";
/// The adapter package.
pub const ADAPTER: &str = "roster-spin-adapter";
/// The cron package.
pub const CRON: &str = "roster-spin-cron";

/// The interfaces that join the parts (WIT package `roster:hub@0.1.0`).
const STORE: &str = "roster:hub/store@0.1.0";
const EVENTS: &str = "roster:hub/events@0.1.0";
const TYPES: &str = "roster:hub/types@0.1.0";

/// The HTTP handler export, as spin-sdk 5 names it and Spin 3.x and 4.x look for it.
pub const HANDLER: &str = "wasi:http/incoming-handler@0.2.0";

/// The cron export: a world-level function of `fermyon:spin-cron@2.0.0`.
pub const CRON_HANDLER: &str = "handle-cron-event";

/// Where the composed HTTP component goes: the path `spin.toml` names.
pub fn artifact(root: &Path) -> PathBuf {
    root.join("target").join("spin").join("roster.wasm")
}

/// Where the composed cron component goes (the cron variant in docs/spin.md).
pub fn cron_artifact(root: &Path) -> PathBuf {
    root.join("target").join("spin").join("roster-cron.wasm")
}

/// Builds the parts and composes them into [`artifact`] and [`cron_artifact`]; returns the
/// HTTP component's path.
pub fn build(root: &Path) -> Result<PathBuf, String> {
    let target_dir = xtask::wasm_target_dir(root);
    let packages: Vec<&str> = xtask::COMPONENTS.iter().map(|(_, p)| *p).collect();
    let components = xtask::build_wasm(root, &target_dir, &packages)?;
    let spin = xtask::build_wasm(root, &target_dir, &[GATEWAY, ADAPTER, CRON])?;
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let [gateway, adapter, cron] = [read(&spin[0])?, read(&spin[1])?, read(&spin[2])?];
    let mut parts = Vec::with_capacity(components.len());
    for ((slot, _), path) in xtask::COMPONENTS.iter().zip(&components) {
        parts.push((*slot, read(path)?));
    }
    let reaper: Vec<(&str, Vec<u8>)> = parts
        .iter()
        .filter(|(slot, _)| *slot == "reaper")
        .cloned()
        .collect();
    let composed_cron = compose(&cron, CRON_HANDLER, &adapter, &reaper)?;
    write_atomically(&cron_artifact(root), &composed_cron)?;
    let composed = compose(&gateway, HANDLER, &adapter, &parts)?;
    let out = artifact(root);
    write_atomically(&out, &composed)?;
    Ok(out)
}

/// Composes `main` (which imports the components' interfaces and exports `export`) with
/// the adapter and the components (slot name, bytes).
pub fn compose(
    main: &[u8],
    export: &str,
    adapter: &[u8],
    components: &[(&str, Vec<u8>)],
) -> Result<Vec<u8>, String> {
    let mut graph = CompositionGraph::new();
    let register = |graph: &mut CompositionGraph, name: &str, bytes: &[u8]| {
        let package = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut())
            .map_err(|error| format!("{name} is not a usable component: {error:#}"))?;
        graph
            .register_package(package)
            .map_err(|error| format!("cannot register {name}: {error}"))
    };
    let adapter = register(&mut graph, "roster:spin-adapter", adapter)?;
    let main = register(&mut graph, "roster:spin-main", main)?;
    let adapter = graph.instantiate(adapter);
    let main = graph.instantiate(main);
    let store = export_of(&mut graph, adapter, STORE)?;
    let events = export_of(&mut graph, adapter, EVENTS)?;
    let types = export_of(&mut graph, adapter, TYPES)?;
    connect(&mut graph, main, TYPES, types)?;
    for (slot, bytes) in components {
        let package = register(&mut graph, &format!("roster:{slot}"), bytes)?;
        let instance = graph.instantiate(package);
        // The policy can only decide: it imports no store and no events.
        if *slot != "policy" {
            connect(&mut graph, instance, STORE, store)?;
            connect(&mut graph, instance, EVENTS, events)?;
        }
        connect(&mut graph, instance, TYPES, types)?;
        // The metadata component also exports `messages` (channels' state lives in one
        // component).
        let interfaces: &[&str] = if *slot == "metadata" {
            &["metadata", "messages"]
        } else {
            std::slice::from_ref(slot)
        };
        for name in interfaces {
            let interface = format!("roster:hub/{name}@0.1.0");
            let export = export_of(&mut graph, instance, &interface)?;
            connect(&mut graph, main, &interface, export)?;
        }
    }
    let handler = export_of(&mut graph, main, export)?;
    graph
        .export(handler, export)
        .map_err(|error| format!("cannot export {export}: {error}"))?;
    graph
        .encode(EncodeOptions {
            define_components: true,
            validate: true,
            processor: None,
        })
        .map_err(|error| format!("the composition does not encode: {error:#}"))
}

fn export_of(graph: &mut CompositionGraph, instance: NodeId, name: &str) -> Result<NodeId, String> {
    graph
        .alias_instance_export(instance, name)
        .map_err(|error| format!("no export {name}: {error}"))
}

fn connect(
    graph: &mut CompositionGraph,
    instance: NodeId,
    import: &str,
    value: NodeId,
) -> Result<(), String> {
    graph
        .set_instantiation_argument(instance, import, value)
        .map_err(|error| format!("cannot satisfy the import {import}: {error}"))
}

/// Writes `bytes` to `path` through a temporary file, so a reader never sees half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let temporary = path.with_extension(format!("wasm.{}.tmp", std::process::id()));
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}
