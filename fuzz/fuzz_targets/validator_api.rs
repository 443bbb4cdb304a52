#![no_main]
dvlab_fuzz::target!(validator_api);
