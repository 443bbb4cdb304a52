//! Cluster lock file, cluster creation (trusted dealer) and the cluster definition of a DKG.

pub mod create;
pub mod definition;
pub mod lock;
pub mod shares;

pub use lock::{Cluster, ClusterLock};
