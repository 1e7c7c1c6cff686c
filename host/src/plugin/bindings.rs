//! The host side of `wit/policy.wit`: the one `bindgen!` of the gateway.
#![allow(missing_docs, unsafe_code, clippy::all)]

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "portcullis:policy/host.headers": crate::plugin::host::HeaderView,
        "portcullis:policy/host.body": crate::plugin::host::BodyView,
    },
});

pub use self::portcullis::policy::host as imports;
pub use self::portcullis::policy::types;
