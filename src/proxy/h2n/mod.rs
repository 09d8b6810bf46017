//! Native HTTP/2 server side (issue #20), built as pure layers first: the frame codec
//! ([`frame`]), HPACK ([`hpack`]) and the request check that hands a decoded list to the
//! HTTP/1.1 phases as a `Head` without copying ([`request`]), the stream table with its
//! states, id rules and reset accounting ([`streams`]), and the header-block assembly and
//! flood guards ([`guard`]); later the connection driver on monoio's
//! owned-buffer I/O (flow-control windows of the connection, timeouts, the frame loop).
//!
//! NOT WIRED INTO THE DATA PATH YET: downstream HTTP/2 still runs on the `h2` crate through
//! monoio-compat (src/proxy/h2). Nothing here does I/O, spawns, reads the clock or panics on
//! network input; every protocol violation maps to an RFC 9113 error code and scope.

pub mod conn;
mod dispatch;
pub mod frame;
pub mod guard;
pub mod hpack;
mod huffman;
pub mod request;
pub mod shared;
pub mod stream;
pub mod streams;
