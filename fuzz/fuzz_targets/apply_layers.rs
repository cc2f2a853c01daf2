//! Random layers from the hostile grammar applied to a sandbox: nothing
//! outside the rootfs may change, and the two path resolvers must agree.
//! Run it through `scripts/fuzz`, which confines it to an unprivileged user
//! namespace (the layers attack `/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod support;

fuzz_target!(|data: &[u8]| {
    support::layer_grammar::check_containment(data);
});
