//! Cluster lock file and cluster creation.

pub mod create;
pub mod lock;
pub mod shares;

pub use lock::{Cluster, ClusterLock};
