//! EIP-3076 slashing protection.
