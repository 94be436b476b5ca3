//! Typed names for what the manifest declares, given once when it is parsed: a program is
//! a [`ProgramId`] wherever it is referred to across subsystems (messages between them,
//! the fleet view), never a bare index that could be confused with a bind's or a route's.
//! The id is the program's position in `Manifest::programs`, which does not change while
//! the manifest is loaded.

use std::fmt;

/// A program of the manifest (ship, job or bay; not a prelaunch job).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramId(u32);

impl ProgramId {
    /// Names no program: counts kept for it are dropped.
    pub const NONE: ProgramId = ProgramId(u32::MAX);

    /// The id of the program at `index` in `Manifest::programs`.
    pub fn at(index: usize) -> ProgramId {
        // A manifest is refused long before it could hold 2^32 programs.
        ProgramId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// Its position in `Manifest::programs` (and in the vectors kept beside it).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "program#{}", self.0)
    }
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
    }
}
