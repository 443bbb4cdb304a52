//! libp2p cluster networking.

pub mod key;
