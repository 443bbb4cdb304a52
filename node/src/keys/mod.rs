//! Threshold BLS, EIP-2335 keystores and interop keys.
