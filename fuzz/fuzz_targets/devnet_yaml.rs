#![no_main]
dvlab_fuzz::target!(devnet_yaml);
