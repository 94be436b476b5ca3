//! Mothership: one binary that launches a fleet of processes, keeps them alive, and (in
//! later layers) exposes them over HTTP and WebSocket. `main.rs` only calls [`cli::main`].

pub mod alloc_cache;
pub mod cli;
pub mod control;
pub mod flagship;
pub mod fleet;
pub mod health;
pub mod hooks;
pub mod manifest;
pub mod output;
pub mod payload;
pub mod proto;
pub mod proxy;
pub mod reactor;
pub mod root;
pub mod supervisor;
pub mod sysinit;
#[cfg(feature = "tui")]
pub mod tui;
pub mod uplinks;
