//! The test harness's own grammar, sandbox and oracle (one copy of each).

#![allow(dead_code)]

#[path = "../../../tests/support/layer_grammar.rs"]
pub mod layer_grammar;
#[path = "../../../tests/support/raw_tar.rs"]
pub mod raw_tar;
#[path = "../../../tests/support/sandbox.rs"]
pub mod sandbox;
