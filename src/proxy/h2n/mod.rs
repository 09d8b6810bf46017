//! The native HTTP/2 server (issue #20): downstream h2c and h2 over TLS. Pure layers: the
//! frame codec ([`frame`]), HPACK ([`hpack`]), the request check that hands a decoded list to
//! the HTTP/1.1 phases as a `Head` without copying ([`request`]), the stream table with its
//! states, id rules and reset accounting ([`streams`]), the header-block assembly and flood
//! guards ([`guard`]). On top of them the connection on monoio's owned-buffer I/O: the driver
//! (reader and writer tasks, timeouts: [`conn`]), what each frame does (`dispatch`), the
//! state they share (windows, output, stream slots: [`shared`]) and a stream's handle for its
//! request's work ([`stream`]). Nothing here panics on network input; every protocol violation
//! maps to an RFC 9113 error code and scope. The `h2` crate is used for upstreams only.

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
