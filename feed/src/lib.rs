//! Market data derivation and the WebSocket server (see the feed issue).

pub mod problem;
