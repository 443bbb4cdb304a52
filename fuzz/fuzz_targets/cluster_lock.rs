#![no_main]
dvlab_fuzz::target!(cluster_lock);
