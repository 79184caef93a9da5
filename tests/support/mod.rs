//! Test peers shared by the integration tests. Each test binary that needs one
//! declares `mod support;` and uses what it needs; the rest is allowed to be unused.
#![allow(dead_code)]

pub mod http_server;
pub mod proxy;
