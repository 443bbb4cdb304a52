#![no_main]
dvlab_fuzz::target!(ssz);
