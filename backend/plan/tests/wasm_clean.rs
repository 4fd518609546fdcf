//! The planner runs in the browser as well as in the engine, so it may depend only on crates
//! that build for wasm32 without a C toolchain. `scripts/test.sh` builds it for wasm32; this
//! test catches a new dependency early, in a plain `cargo test`.

#[test]
fn dependencies_are_only_serde_thiserror_and_utoipa() {
    let manifest = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    let mut section = "";
    let mut dependencies = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            dependencies.push(name.to_string());
        }
    }
    assert!(
        dependencies.iter().any(|d| d == "serde"),
        "{dependencies:?}"
    );
    let allowed = ["serde", "thiserror", "utoipa"];
    let foreign: Vec<&String> = dependencies
        .iter()
        .filter(|d| !allowed.contains(&d.as_str()))
        .collect();
    assert!(
        foreign.is_empty(),
        "not known to build for wasm32: {foreign:?}"
    );
}
