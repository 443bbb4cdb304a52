#![no_main]
dvlab_fuzz::target!(beacon_client);
