//! Typed names for what the manifest declares, given once when it is parsed: a program, a
//! bind and a route are each a distinct id type wherever they are referred to across
//! subsystems (messages between them, the fleet view, the edge's tables and counters),
//! never a bare index that could be confused with another kind's. An id is the position
//! of what it names in the manifest (`Manifest::programs`, `Manifest::binds`, routes in
//! declaration order), which does not change while the manifest is loaded.

use std::fmt;

/// Defines an id type over `u32` with a reserved `NONE`.
macro_rules! manifest_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u32);

        impl $name {
            /// Names nothing of its kind (counts kept for it are dropped).
            pub const NONE: $name = $name(u32::MAX);

            /// The id of the item at `index` among its kind.
            pub fn at(index: usize) -> $name {
                // A manifest is refused long before it could hold 2^32 of anything.
                $name(u32::try_from(index).unwrap_or(u32::MAX))
            }

            /// Its position among its kind (and in the vectors kept beside them).
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, concat!($label, "#{}"), self.0)
            }
        }
    };
}

manifest_id!(
    /// A program of the manifest (ship, job or bay; not a prelaunch job).
    ProgramId,
    "program"
);
manifest_id!(
    /// A bind of `[mothership.bind]`.
    BindId,
    "bind"
);
manifest_id!(
    /// A route, numbered in declaration order over every program's `routes`.
    RouteId,
    "route"
);

impl BindId {
    /// The metrics listener (`metrics_port`), which is no bind of the manifest.
    pub const METRICS: BindId = BindId(u32::MAX - 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_its_position() {
        assert_eq!(ProgramId::at(3).index(), 3);
        assert_eq!(ProgramId::at(3), ProgramId::at(3));
        assert_ne!(ProgramId::at(3), ProgramId::at(4));
        assert_eq!(ProgramId::at(0).to_string(), "program#0");
        assert_eq!(RouteId::at(2).to_string(), "route#2");
        assert_ne!(BindId::METRICS, BindId::NONE);
        assert_ne!(BindId::METRICS, BindId::at(0));
    }
}
