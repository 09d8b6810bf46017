//! lnd-bridge: the side runtime (stub: to be written).
pub mod protocol;
