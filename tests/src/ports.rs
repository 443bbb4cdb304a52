//! Free TCP/UDP port allocation on 127.0.0.1.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
};

use anyhow::{bail, Context, Result};
use rand::Rng;

/// The lowest port handed out.
const LOWEST: u16 = 10_000;

/// Hands out loopback ports that were free (TCP and UDP) when allocated, never the same port
/// twice. The port is released before it is returned, so another program could take it before
/// the caller binds it. To make that unlikely on a busy shared machine, ports are drawn at random
/// from *below* the kernel's ephemeral range (`net.ipv4.ip_local_port_range`): the kernel never
/// gives those to outgoing connections or to programs binding port 0, which is what took a port
/// in the seconds between allocation and bind before (a 1,000-validator bench-scale row:
/// `binding the validator API to 127.0.0.1:38877: Address already in use`). Only when that
/// range is too small does it fall back to ports the kernel picks.
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
        let end = ephemeral_start();
        if end > LOWEST + 1_000 {
            let mut rng = rand::thread_rng();
            for _ in 0..256 {
                let port = rng.gen_range(LOWEST..end);
                if self.given.contains(&port) || !bindable(port) {
                    continue;
                }
                self.given.insert(port);
                return Ok(port);
            }
        }
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

/// Whether `port` can be bound on 127.0.0.1 for TCP and UDP right now.
fn bindable(port: u16) -> bool {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    TcpListener::bind(addr).is_ok() && UdpSocket::bind(addr).is_ok()
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
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
            assert!(
                (LOWEST..ephemeral_start()).contains(&p),
                "{p} outside the low range"
            );
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)).unwrap();
        }
    }
}
