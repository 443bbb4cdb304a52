#![no_main]
dvlab_fuzz::target!(p2p_envelope);
