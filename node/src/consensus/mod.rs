//! QBFT consensus engine.
