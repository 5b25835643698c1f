//! A version handshake with one P2P peer before the light client starts: the peer answers in
//! time (else unreachable, or not a Bitcoin node), on the wallet's network (else, asking again
//! with the other networks' message start, which network it is on), and says it serves compact
//! block filters. Its `version` message also gives the height it claims, used as the tip for a
//! birth height. Blocking, one short-lived TCP connection per attempt.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bitcoin::consensus::encode;
use bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
use bitcoin::p2p::message_network::VersionMessage;
use bitcoin::p2p::{Address, Magic, ServiceFlags};
use bitcoin::Network;

/// The protocol version ckm announces (BIP-0339 `wtxidrelay`, as the light client does).
const PROTOCOL_VERSION: u32 = 70_016;
/// A `version` message is about 120 bytes; anything announced above this is not one.
const MAX_VERSION_BYTES: u32 = 4_096;
/// The header of every P2P message: magic, command, length, checksum.
const HEADER_BYTES: usize = 24;

/// The networks a peer can be on, for naming the one it is on when it is not the wallet's.
pub(super) const NETWORKS: [Network; 5] = [
    Network::Bitcoin,
    Network::Testnet,
    Network::Testnet4,
    Network::Signet,
    Network::Regtest,
];

/// What a peer says of itself in its `version` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hello {
    /// The services it offers.
    pub services: ServiceFlags,
    /// The height of its best block, as it claims.
    pub start_height: i32,
    /// Its user agent, e.g. `/Satoshi:29.0.0/`.
    pub user_agent: String,
}

/// Why a handshake gave no `version` message.
#[derive(Debug)]
pub(super) enum Failure {
    /// No TCP connection (refused, unroutable, timed out).
    Connect(std::io::Error),
    /// Connected, but no answer in time, the connection closed, or the answer was not a
    /// `version` message of this network.
    NoHandshake(String),
}

/// One handshake with `addr` using `network`'s message start, each step bounded by `timeout`.
pub(super) fn hello(
    addr: SocketAddr,
    network: Network,
    timeout: Duration,
) -> Result<Hello, Failure> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(Failure::Connect)?;
    let io = |e: std::io::Error| {
        Failure::NoHandshake(match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no answer within {} s", timeout.as_secs())
            }
            std::io::ErrorKind::UnexpectedEof => "the peer closed the connection".to_string(),
            _ => e.to_string(),
        })
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut version = VersionMessage::new(
        ServiceFlags::NONE,
        i64::try_from(crate::auth::unix_now()).unwrap_or(0),
        Address::new(&addr, ServiceFlags::NONE),
        Address::new(&unspecified, ServiceFlags::NONE),
        rand::random(),
        format!("/ckm:{}/", env!("CARGO_PKG_VERSION")),
        0,
    );
    version.version = PROTOCOL_VERSION;
    version.relay = false;
    let message = RawNetworkMessage::new(network.magic(), NetworkMessage::Version(version));
    stream.write_all(&encode::serialize(&message)).map_err(io)?;

    let mut header = [0u8; HEADER_BYTES];
    stream.read_exact(&mut header).map_err(io)?;
    let magic_bytes: [u8; 4] = header[0..4].try_into().unwrap_or([0; 4]);
    let magic = Magic::from_bytes(magic_bytes);
    if magic != network.magic() {
        return Err(Failure::NoHandshake(match Network::from_magic(magic) {
            Some(other) => format!("it answered on {}", other.to_core_arg()),
            None => "its answer is not a Bitcoin P2P message".to_string(),
        }));
    }
    let length_bytes: [u8; 4] = header[16..20].try_into().unwrap_or([0xff; 4]);
    let length = u32::from_le_bytes(length_bytes);
    if length > MAX_VERSION_BYTES {
        return Err(Failure::NoHandshake(format!(
            "its first message announces {length} bytes, more than a version message"
        )));
    }
    let mut bytes = header.to_vec();
    bytes.resize(HEADER_BYTES + length as usize, 0);
    stream.read_exact(&mut bytes[HEADER_BYTES..]).map_err(io)?;
    let raw: RawNetworkMessage = encode::deserialize(&bytes)
        .map_err(|e| Failure::NoHandshake(format!("its answer does not decode: {e}")))?;
    match raw.payload() {
        NetworkMessage::Version(v) => Ok(Hello {
            services: v.services,
            start_height: v.start_height,
            user_agent: v.user_agent.clone(),
        }),
        other => Err(Failure::NoHandshake(format!(
            "it answered '{}' instead of 'version'",
            other.cmd()
        ))),
    }
}

/// The network `addr` answers a handshake on, trying every network but `except` at once
/// (a node ignores or drops a handshake with another network's message start). `None` when
/// none answers within `timeout`.
pub(super) fn which_network(
    addr: SocketAddr,
    except: Option<Network>,
    timeout: Duration,
) -> Option<Network> {
    let handles: Vec<_> = NETWORKS
        .into_iter()
        .filter(|n| Some(*n) != except)
        .map(|n| std::thread::spawn(move || hello(addr, n, timeout).ok().map(|_| n)))
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().ok().flatten())
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_closed_port_fails_to_connect_and_a_silent_one_times_out() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let silent = listener.local_addr()?;
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let started = std::time::Instant::now();
        let e = hello(closed, Network::Regtest, Duration::from_secs(2));
        assert!(matches!(e, Err(Failure::Connect(_))), "{e:?}");
        let e = hello(silent, Network::Regtest, Duration::from_millis(300));
        assert!(
            matches!(&e, Err(Failure::NoHandshake(r)) if r.contains("no answer")),
            "{e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        Ok(())
    }

    #[test]
    fn a_version_answer_is_read_with_its_services_and_height() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        // A fake signet peer: answers a handshake of its own network with a version message.
        let server = std::thread::spawn(move || -> std::io::Result<()> {
            {
                let (mut s, _) = listener.accept()?;
                let mut header = [0u8; HEADER_BYTES];
                s.read_exact(&mut header)?;
                if header[0..4] != Network::Signet.magic().to_bytes() {
                    return Ok(());
                }
                let any = SocketAddr::from(([0, 0, 0, 0], 0));
                let v = VersionMessage::new(
                    ServiceFlags::NETWORK | ServiceFlags::COMPACT_FILTERS,
                    0,
                    Address::new(&any, ServiceFlags::NONE),
                    Address::new(&any, ServiceFlags::NONE),
                    1,
                    "/fake:1/".into(),
                    123,
                );
                let m = RawNetworkMessage::new(Network::Signet.magic(), NetworkMessage::Version(v));
                s.write_all(&encode::serialize(&m))?;
            }
            Ok(())
        });
        let h = hello(addr, Network::Signet, Duration::from_secs(2));
        let h = h.map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        assert_eq!(h.start_height, 123);
        assert!(h.services.has(ServiceFlags::COMPACT_FILTERS));
        assert_eq!(h.user_agent, "/fake:1/");
        let _ = server.join();
        Ok(())
    }
}
