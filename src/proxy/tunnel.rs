//! The tunnel an upgraded connection (WebSocket) becomes: bytes pass both ways unread until
//! both sides have ended, each end shut as the other side's stream ends.

use super::*;

/// Moves what the buffers hold between client and upstream and passes on each end of
/// stream once; sets the phase that follows (the connection dies once both are shut).
pub(super) fn step(c: &mut Conn, mut client_shut: bool, mut up_shut: bool) -> bool {
    let Some(up) = &mut c.up else {
        c.dead = true;
        return true;
    };
    let mut p = move_bytes(&mut c.cin, &mut up.uout) | move_bytes(&mut up.uin, &mut c.cout);
    if c.c_eof && c.cin.is_empty() && up.uout.is_empty() && !up_shut {
        up.stream.shutdown_write();
        up_shut = true;
        p = true;
    }
    if up.eof && up.uin.is_empty() && c.cout.is_empty() && !client_shut {
        c.client.shutdown_write();
        client_shut = true;
        p = true;
    }
    if client_shut && up_shut {
        c.dead = true;
    }
    c.phase = Phase::Tunnel {
        client_shut,
        up_shut,
    };
    p
}
