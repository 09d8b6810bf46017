//! HTTP/2 downstream (placeholder until the h2 server lands): closes the connection.

use std::net::SocketAddr;
use std::rc::Rc;

use super::io::Io;
use super::CoreCtx;

/// Serves one HTTP/2 connection; `buffered` are bytes already read from it (the preface).
pub async fn serve<S: Io>(_core: Rc<CoreCtx>, _stream: S, _buffered: Vec<u8>, _peer: SocketAddr) {}
