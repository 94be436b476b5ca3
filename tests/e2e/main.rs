//! End-to-end tests: the real `mothership` binary, real child processes, real signals.

mod bays;
mod cli;
mod control;
mod edge;
#[cfg(feature = "postgres")]
mod flagship_pg;
mod hardening;
mod health;
mod hooks;
mod logfiles;
mod output;
mod pid1;
mod platform;
mod proxy;
mod supervise;
mod support;
mod sysinit;
mod tui;
mod uplinks;
#[cfg(feature = "wasm")]
mod wasm;
