//! Free TCP/UDP port allocation on 127.0.0.1.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
};

use anyhow::{bail, Context, Result};

/// Hands out loopback ports that were free (TCP and UDP) when allocated, never the same port
/// twice. The port is released before it is returned, so another program could take it in
/// between; on a test machine that race is rare and shows up as a clear bind error.
#[derive(Debug, Default)]
pub struct PortAllocator {
    given: HashSet<u16>,
}

impl PortAllocator {
    /// A fresh allocator.
    pub fn new() -> Self {
        Self::default()
    }

    /// A port free for both TCP and UDP on 127.0.0.1 (Lodestar uses the same number for
    /// libp2p TCP and discv5 UDP).
    pub fn allocate(&mut self) -> Result<u16> {
        for _ in 0..64 {
            let tcp = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
                .context("binding a TCP port on 127.0.0.1")?;
            let port = tcp.local_addr()?.port();
            if self.given.contains(&port) {
                continue;
            }
            if UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_err() {
                continue;
            }
            self.given.insert(port);
            return Ok(port);
        }
        bail!("found no free loopback port in 64 attempts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let mut a = PortAllocator::new();
        let ports: Vec<u16> = (0..20).map(|_| a.allocate().unwrap()).collect();
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
        for p in ports {
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)).unwrap();
        }
    }
}
