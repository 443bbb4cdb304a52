//! Cluster lock file and cluster creation.
