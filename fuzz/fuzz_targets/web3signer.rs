#![no_main]
dvlab_fuzz::target!(web3signer);
