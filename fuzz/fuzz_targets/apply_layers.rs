//! Random layers from the hostile grammar applied to a sandbox: nothing
//! outside the rootfs may change, and the two path resolvers must agree.
//! Run it through `scripts/fuzz`, which confines it to an unprivileged user
//! namespace (the layers attack `/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The test harness's own grammar, sandbox and oracle (one copy of each).
#[allow(dead_code)]
mod support {
    #[path = "../../../tests/support/layer_grammar.rs"]
    pub mod layer_grammar;
    #[path = "../../../tests/support/raw_tar.rs"]
    pub mod raw_tar;
    #[path = "../../../tests/support/sandbox.rs"]
    pub mod sandbox;
}

fuzz_target!(|data: &[u8]| {
    support::layer_grammar::check_containment(data);
});
