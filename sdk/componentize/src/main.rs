//! `portcullis-componentize CORE.wasm COMPONENT.wasm`: wraps a plugin built with the SDK for
//! `wasm32-unknown-unknown` into a component, from the contract wit-bindgen embedded in it.
//!
//! Such a component imports the contract's host interface and nothing else: no WASI, so no
//! adapter module. That is both least capability and what keeps a fresh instance cheap (two
//! core instances instead of the eighteen a Debian-built `wasm32-wasip2` component carries; see
//! BENCHMARKS.md). A module that imports anything else (WASI included) is refused.
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: portcullis-componentize CORE.wasm COMPONENT.wasm");
        return ExitCode::from(2);
    };
    match componentize(Path::new(input), Path::new(output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-componentize: {input}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Read the core module at `input`, encode it as a component, and write that to `output`
/// (through a temporary file and a rename, so a gateway watching the directory never loads a
/// half-written component).
fn componentize(input: &Path, output: &Path) -> Result<()> {
    let module = std::fs::read(input).context("cannot read the core module")?;
    let component = encode(&module)?;
    let partial = output.with_extension("wasm.partial");
    std::fs::write(&partial, &component)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, output).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            output.display()
        )
    })
}

/// The component for a core module built with the SDK: one carrying wit-bindgen's
/// `component-type` section for a world that exports the contract's plugin interface.
fn encode(module: &[u8]) -> Result<Vec<u8>> {
    let (_, bindgen) = wit_component::metadata::decode(module).context("not a core module")?;
    let world = &bindgen.resolve.worlds[bindgen.world];
    let exports_plugin = world.exports.keys().any(|key| {
        bindgen
            .resolve
            .name_world_key(key)
            .starts_with(PLUGIN_INTERFACE)
    });
    if !exports_plugin {
        anyhow::bail!(
            "does not export `{PLUGIN_INTERFACE}`: not built with the Portcullis SDK \
             (`portcullis_sdk::export_plugin!`)"
        );
    }
    wit_component::ComponentEncoder::default()
        .module(module)?
        .validate(true)
        .encode()
        .context("cannot encode it as a component")
}

/// The interface every plugin exports, any contract version (the gateway checks the version).
const PLUGIN_INTERFACE: &str = "portcullis:policy/plugin@";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_without_the_contract_section_is_refused() {
        let module = wat::parse_str("(module (func (export \"f\")))").unwrap_or_default();
        assert!(!module.is_empty());
        let err = format!("{:#}", encode(&module).unwrap_err());
        assert!(
            err.contains("does not export `portcullis:policy/plugin@`"),
            "{err}"
        );
    }

    #[test]
    fn a_component_is_refused_as_input() {
        let component = wat::parse_str("(component)").unwrap_or_default();
        assert!(!component.is_empty());
        let err = format!("{:#}", encode(&component).unwrap_err());
        assert!(err.contains("not a core module"), "{err}");
    }

    #[test]
    fn a_failed_encoding_writes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let input = dir.path().join("core.wasm");
        let output = dir.path().join("plugin.wasm");
        std::fs::write(&input, b"not wasm").unwrap_or_else(|e| panic!("write: {e}"));
        assert!(componentize(&input, &output).is_err());
        assert!(!output.exists());
        assert!(!output.with_extension("wasm.partial").exists());
    }
}
