//! Connection, upstream and listener ids. A connection lives in a slot of `Edge::conns`,
//! an upstream in a slot of `Edge::up_owner`, a listener in one of `Edge::listeners`;
//! slots are reused, so each occupant also gets a generation, carried in its `mio` token
//! and in every list that names it for later (connections to drive next turn, to read at
//! the end of the turn, held requests, listeners with a backlog left). An
//! event or a reminder for an earlier occupant of the slot then finds a different
//! generation and is dropped, instead of reaching whoever lives there now.
//!
//! Token layout above `EDGE_TOKENS`: bits 0-1 the kind (listener, client, upstream), bits
//! 2-33 the slot, the bits above the generation (on targets with a 64-bit `usize`; with a
//! 32-bit one the generation is always 0 and only the slot is checked).

use mio::Token;

use crate::reactor::EDGE_TOKENS as EDGE_BASE;

const SLOT_BITS: u32 = 32;
const GEN_SHIFT: u32 = 2 + SLOT_BITS;

/// The generations that fit in a token beside the slot and the kind, below `usize::MAX`
/// minus the tokens below the edge's.
const GEN_MASK: u32 = if usize::BITS >= 64 {
    (1 << (usize::BITS - GEN_SHIFT - 1)) - 1
} else {
    0
};

/// One occupant of a slot: a connection, an upstream or a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ConnId {
    pub slot: usize,
    pub gen: u32,
}

/// Hands out generations, one per new occupant of any slot.
#[derive(Default)]
pub(super) struct Generations(u32);

impl Generations {
    pub fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(1) & GEN_MASK;
        self.0
    }
}

pub(super) fn token(kind: usize, slot: usize, gen: u32) -> Token {
    let gen = (gen as usize).checked_shl(GEN_SHIFT).unwrap_or(0);
    Token(EDGE_BASE + (gen | (slot << 2) | kind))
}

/// (kind, slot, generation) of an edge token.
pub(super) fn untoken(t: Token) -> Option<(usize, usize, u32)> {
    let v = t.0.checked_sub(EDGE_BASE)?;
    let slot = (v >> 2) & ((1usize.checked_shl(SLOT_BITS).unwrap_or(0)).wrapping_sub(1));
    let gen = v.checked_shr(GEN_SHIFT).unwrap_or(0) as u32;
    Some((v & 3, slot, gen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_carries_kind_slot_and_generation() {
        let mut g = Generations::default();
        let a = g.next();
        let b = g.next();
        assert_ne!(a, b);
        for (kind, slot, gen) in [(0, 0, 0), (1, 5, a), (2, 70_000, b), (1, 3, GEN_MASK)] {
            assert_eq!(untoken(token(kind, slot, gen)), Some((kind, slot, gen)));
        }
        assert_ne!(
            token(1, 5, a),
            token(1, 5, b),
            "a reused slot gets a new token"
        );
        assert_eq!(
            untoken(Token(EDGE_BASE - 1)),
            None,
            "below the edge's tokens"
        );
    }

    #[test]
    fn generations_wrap_within_the_token() {
        let mut g = Generations(GEN_MASK);
        assert_eq!(g.next(), 0);
        assert_eq!(g.next(), 1);
    }
}
