//! The fleet as the subsystems share it, owned by none of them: the messages they send
//! each other through the root, the view the root keeps from those messages for the edge
//! (routing, metrics), and what a process group uses.

pub mod health;
pub mod message;
pub mod resources;
pub mod view;

pub use message::{Message, Operation, EVENT_KINDS};
pub use view::{FleetView, ShipView, FLEET_STATES, STATES};
