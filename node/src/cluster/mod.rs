//! Cluster lock file, cluster creation (trusted dealer), the cluster definition of a DKG and the
//! validators' deposit data.

pub mod create;
pub mod definition;
pub mod deposit;
pub mod lock;
pub mod shares;

pub use lock::{Cluster, ClusterLock};
