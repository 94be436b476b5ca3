//! Wire protocols as pure code over bytes: HTTP/1.1 heads and body framing, the chunked
//! codec. No sockets, no clocks, no globals; every parser returns "need more", a value and
//! the bytes it consumed, or an error that maps to an HTTP status.

pub mod chunked;
pub mod coding;
pub mod dock;
pub mod http;
pub mod httpdate;
pub mod ja4h;
pub mod json;
pub mod proxy_protocol;
pub mod target;
pub mod ua;
pub mod ws;
