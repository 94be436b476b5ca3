//! The fleet as the subsystems share it, owned by none of them: the view the supervisor
//! keeps up to date and the edge reads (routing, metrics), and what a process group uses.

pub mod resources;
pub mod view;

pub use view::{FleetView, ShipView, STATES};
