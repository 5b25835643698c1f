//! Compact block filters (BIP-0157/0158) from P2P peers as the wallet's chain source, through
//! the light client `bdk_kyoto`: no node of one's own, no server that learns the addresses.
//!
//! Reading order: [`CbfConfig`] (what the caller gives), [`CbfError`], then [`Cbf`]: `connect`
//! checks every peer with a version handshake of its own (`cbf/probe.rs`: reachable in time, on the
//! wallet's network, serving filters); each sync then runs a light client on a private tokio
//! runtime until it has checked the filters up to the peers' tip, applies its update and stops.
//!
//! Two limits are the protocol's, not ckm's, and are stated wherever the source is offered:
//! filters carry **no mempool** (a payment to the wallet shows only once mined; a transaction
//! of this wallet that a reorg returns to the mempool stays unconfirmed only because the wallet
//! recorded it when it broadcast it), and **one peer can leave blocks out** (every peer given
//! is required, and the light client checks that their filter headers agree).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use bdk_kyoto::bip157::{ChainState, Event, HashCheckpoint, Info, NodeError, ServiceFlags};
use bdk_kyoto::builder::{Builder, BuilderExt};
use bdk_kyoto::{Receiver, Requester, SyncConfig, TrustedPeer, UnboundedReceiver, Warning};
use bitcoin::{BlockHash, FeeRate, Network, Transaction, Txid};

use super::{ChainError, ChainSource, ProgressFn, SyncProgress};
use crate::wallet::CkmWallet;

mod probe;

/// Seconds a peer has to accept a connection and to answer each request, by default.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// At most this many peers (the light client keeps 15 connections at most).
pub const MAX_PEERS: usize = 15;

/// How long a broadcast stays connected after a peer took the transaction.
const HANDOVER_GRACE: Duration = Duration::from_secs(2);

/// Taproot's activation on mainnet: the light client knows the hash of the block before it,
/// so a first sync with a later birth height starts its header chain there, not at genesis.
const TAPROOT_CHECKPOINT_HEIGHT: u32 = 709_631;

/// What the caller gives to reach the P2P network.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct CbfConfig {
    /// `HOST:PORT` of each peer (a bitcoind with `-blockfilterindex=1 -peerblockfilters=1`);
    /// without a port, the network's default P2P port. Two or more: see the module docs.
    pub peers: Vec<String>,
    /// Connection and per-request timeout. Default [`DEFAULT_TIMEOUT_SECS`].
    pub timeout: Duration,
    /// Where a first sync (and a rescan) starts. Default: Taproot's activation (709,632) on
    /// mainnet, genesis elsewhere, as for bitcoind.
    pub start_height: Option<u32>,
    /// The wallet's last checkpoint: sessions that need no filters (broadcast, fee hint)
    /// start their header chain there. Default: the start of a first sync.
    pub checkpoint: Option<(u32, BlockHash)>,
}

impl CbfConfig {
    /// A config with the defaults listed on each field.
    pub fn new(peers: Vec<String>) -> Self {
        CbfConfig {
            peers,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            start_height: None,
            checkpoint: None,
        }
    }
}

/// Why the peers could not be used, or a sync through them failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CbfError {
    /// No peer given, or too many.
    #[error(
        "compact block filters need peers: give --cbf HOST:PORT (a bitcoind started with \
         -blockfilterindex=1 -peerblockfilters=1), twice or more{extra}"
    )]
    Peers {
        /// What is wrong beyond that.
        extra: String,
    },
    /// A peer's address does not parse or resolve.
    #[error("compact-filter peer '{peer}': {reason}")]
    Address {
        /// The peer as given.
        peer: String,
        /// What is wrong.
        reason: String,
    },
    /// No TCP connection to a peer.
    #[error(
        "compact-filter peer {peer} cannot be reached (timeout {timeout_secs} s): {reason}: \
         check the host and its P2P port (8333 on mainnet, 18444 on regtest), not the RPC port"
    )]
    Unreachable {
        /// The peer.
        peer: String,
        /// The timeout in force.
        timeout_secs: u64,
        /// The socket error.
        reason: String,
    },
    /// The peer follows another chain than the wallet.
    #[error("compact-filter peer {peer} is on {node}, but wallet '{wallet}' is on {expected}")]
    WrongNetwork {
        /// The peer.
        peer: String,
        /// The peer's chain, in Core's names.
        node: String,
        /// The wallet.
        wallet: String,
        /// The wallet's chain.
        expected: String,
    },
    /// The peer did not complete a handshake on any network.
    #[error(
        "compact-filter peer {peer} did not answer a Bitcoin P2P handshake for {network} \
         ({reason}): is it a bitcoind P2P port (not RPC, not Electrum)?"
    )]
    NoHandshake {
        /// The peer.
        peer: String,
        /// The network asked for.
        network: String,
        /// What happened.
        reason: String,
    },
    /// The peer does not serve filters.
    #[error(
        "compact-filter peer {peer} ({agent}) does not serve compact block filters: start its \
         bitcoind with -blockfilterindex=1 -peerblockfilters=1"
    )]
    NoFilters {
        /// The peer.
        peer: String,
        /// Its user agent.
        agent: String,
    },
    /// The light client stopped or made no progress.
    #[error("light client ({peers}): {reason}")]
    Client {
        /// The peers, comma-separated.
        peers: String,
        /// What happened, with the last warning of the client.
        reason: String,
    },
}

/// The P2P network as the wallet's chain source, through the peers given.
#[derive(Debug)]
pub struct Cbf {
    peers: Vec<(String, SocketAddr)>,
    network: Network,
    timeout: Duration,
    start_height: u32,
    /// The lowest height the peers claimed in their handshakes.
    claimed_tip: u32,
    /// The best block the wallet knows (given, then the last sync's): sessions that need no
    /// filters (broadcast, fee) start their header chain there.
    tip: Mutex<Option<HashCheckpoint>>,
}

/// Resolves `HOST[:PORT]` (the port defaults to `network`'s P2P port).
fn resolve(peer: &str, network: Network) -> Result<SocketAddr, CbfError> {
    let bad = |reason: String| CbfError::Address {
        peer: peer.to_string(),
        reason,
    };
    if peer.contains("://") {
        return Err(bad(
            "give HOST:PORT without a scheme, e.g. 127.0.0.1:8333".into()
        ));
    }
    let with_port = match peer.rsplit_once(':') {
        Some((_, port)) if !peer.ends_with(']') && port.parse::<u16>().is_ok() => peer.to_string(),
        _ => format!("{peer}:{}", default_p2p_port(network)),
    };
    let mut addrs = with_port
        .to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

/// Bitcoin Core's default P2P port on `network`.
pub fn default_p2p_port(network: Network) -> u16 {
    match network.to_core_arg() {
        "main" => 8333,
        "test" => 18333,
        "testnet4" => 48333,
        "signet" => 38333,
        _ => 18444,
    }
}

/// The header checkpoint a first sync starts from: Taproot's on mainnet when the start is
/// after it, else genesis.
fn anchor(network: Network, start_height: u32) -> HashCheckpoint {
    if network == Network::Bitcoin && start_height > TAPROOT_CHECKPOINT_HEIGHT {
        HashCheckpoint::taproot_activation()
    } else {
        HashCheckpoint::from_genesis(network)
    }
}

impl Cbf {
    /// Resolves the peers and shakes hands with each (in parallel): every one must answer on
    /// `network` and serve filters, so that a typo, a dead host or the wrong chain shows here
    /// and not as a hanging sync.
    ///
    /// # Errors
    /// [`CbfError::Peers`], [`CbfError::Address`], [`CbfError::Unreachable`],
    /// [`CbfError::WrongNetwork`] (naming both chains), [`CbfError::NoHandshake`],
    /// [`CbfError::NoFilters`].
    pub fn connect(config: &CbfConfig, wallet: &str, network: Network) -> Result<Self, CbfError> {
        if config.peers.is_empty() || config.peers.len() > MAX_PEERS {
            return Err(CbfError::Peers {
                extra: if config.peers.is_empty() {
                    String::new()
                } else {
                    format!(", {MAX_PEERS} at most ({} given)", config.peers.len())
                },
            });
        }
        let mut peers = Vec::with_capacity(config.peers.len());
        for p in &config.peers {
            peers.push((p.clone(), resolve(p, network)?));
        }
        let timeout = config.timeout;
        let handles: Vec<_> = peers
            .iter()
            .cloned()
            .map(|(name, addr)| {
                std::thread::spawn(move || check_peer(&name, addr, network, timeout))
            })
            .collect();
        let mut claimed_tip = u32::MAX;
        for h in handles {
            let height = h.join().map_err(|_| CbfError::Client {
                peers: config.peers.join(", "),
                reason: "a handshake thread panicked".into(),
            })?;
            let height = height.map_err(|e| match e {
                CbfError::WrongNetwork {
                    peer,
                    node,
                    expected,
                    ..
                } => CbfError::WrongNetwork {
                    peer,
                    node,
                    wallet: wallet.to_string(),
                    expected,
                },
                other => other,
            })?;
            claimed_tip = claimed_tip.min(height);
        }
        Ok(Cbf {
            peers,
            network,
            timeout,
            start_height: config
                .start_height
                .unwrap_or_else(|| super::bitcoind::default_birth_height(network)),
            claimed_tip,
            tip: Mutex::new(
                config
                    .checkpoint
                    .map(|(height, hash)| HashCheckpoint::new(height, hash)),
            ),
        })
    }

    /// The network the first peer answers on (every network tried), for a home without
    /// wallets; then [`Cbf::connect`] on it.
    ///
    /// # Errors
    /// As [`Cbf::connect`].
    pub fn connect_any(config: &CbfConfig) -> Result<(Self, Network), CbfError> {
        let first = config.peers.first().ok_or_else(|| CbfError::Peers {
            extra: String::new(),
        })?;
        // Resolving needs a network only for a missing port: mainnet's then.
        let addr = resolve(first, Network::Bitcoin)?;
        let network = probe::which_network(addr, None, config.timeout.min(Duration::from_secs(5)))
            .ok_or_else(|| CbfError::NoHandshake {
                peer: first.clone(),
                network: "any network".into(),
                reason: format!("no answer within {} s", config.timeout.as_secs()),
            })?;
        Ok((Cbf::connect(config, "(new wallets)", network)?, network))
    }

    /// The peers, as given.
    pub fn peers(&self) -> Vec<&str> {
        self.peers.iter().map(|(p, _)| p.as_str()).collect()
    }

    fn peer_list(&self) -> String {
        self.peers().join(", ")
    }

    fn client_error(&self, reason: impl Into<String>) -> ChainError {
        ChainError::Cbf(CbfError::Client {
            peers: self.peer_list(),
            reason: reason.into(),
        })
    }

    /// A light-client builder for the peers: only them, all of them required.
    fn builder(&self) -> Builder {
        let peers = self
            .peers
            .iter()
            .map(|(_, addr)| TrustedPeer::from_socket_addr(*addr));
        let required = u8::try_from(self.peers.len()).unwrap_or(u8::MAX);
        Builder::new(self.network)
            .add_peers(peers)
            .whitelist_only()
            .required_peers(required)
            .handshake_timeout(self.timeout)
            .response_timeout(self.timeout)
    }

    fn runtime(&self) -> Result<tokio::runtime::Runtime, ChainError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| self.client_error(format!("cannot start the runtime: {e}")))
    }

    /// A sync: `from_start` (or a wallet never synced) reads the filters again from the start
    /// height, else from the wallet's last checkpoint (7 blocks back, for a reorg).
    fn walk(
        &self,
        wallet: &mut CkmWallet,
        mut progress: ProgressFn,
        from_start: bool,
    ) -> Result<u32, ChainError> {
        let network = wallet.meta().network;
        if network != self.network {
            return Err(ChainError::Cbf(CbfError::WrongNetwork {
                peer: self.peer_list(),
                node: self.network.to_core_arg().into(),
                wallet: wallet.meta().name.clone(),
                expected: network.to_core_arg().into(),
            }));
        }
        let first = from_start || wallet.bdk().latest_checkpoint().height() == 0;
        let anchor = anchor(network, self.start_height);
        // Filters before the start height are skipped: headers first, then filters from there.
        let skip_to = (first && self.start_height > anchor.height + 1)
            .then(|| self.start_height.saturating_sub(1));
        let client = if first {
            let builder = if skip_to.is_some() {
                self.builder().headers_only_sync()
            } else {
                self.builder()
            };
            let lookahead = wallet.bdk().spk_index().lookahead();
            builder.build_with_wallet(
                wallet.bdk(),
                SyncConfig::wallet_recovery_sync(anchor, lookahead).build(),
            )
        } else {
            self.builder().build_with_wallet(
                wallet.bdk(),
                SyncConfig::sync_from_last_checkpoint().build(),
            )
        }
        .map_err(|e| self.client_error(e.to_string()))?;
        let rt = self.runtime()?;
        let updates = rt.block_on(async {
            let (client, logging, mut subscriber) = client.subscribe();
            let (client, node) = client.managed_start();
            let mut session = Session::start(self, node, logging, client.requester(), None);
            let mut updates = Vec::new();
            let mut result = session
                .next_update(&mut subscriber, &mut progress)
                .await
                .map(|u| {
                    let tip = u.chain.as_ref().map_or(0, |c| c.height());
                    updates.push(u);
                    tip
                });
            // Filters from the start height on, unless the chain has not reached it yet.
            if let (Ok(tip), Some(height)) = (&result, skip_to) {
                if height < *tip {
                    result = match session.requester.rescan_from(height) {
                        Ok(()) => session
                            .next_update(&mut subscriber, &mut progress)
                            .await
                            .map(|u| {
                                updates.push(u);
                                0
                            }),
                        Err(e) => Err(self.client_error(format!("rescan: {e}"))),
                    };
                }
            }
            session.stop().await;
            result.map(|_| updates)
        })?;
        for update in updates {
            wallet
                .bdk_mut()
                .apply_update(update)
                .map_err(|e| ChainError::Connect {
                    source_name: self.describe(),
                    reason: e.to_string(),
                })?;
        }
        wallet.persist()?;
        let cp = wallet.bdk().latest_checkpoint();
        if let Ok(mut tip) = self.tip.lock() {
            *tip = Some(HashCheckpoint::new(cp.height(), cp.hash()));
        }
        Ok(cp.height())
    }

    /// A light client that syncs headers only, from the wallet's tip (else the start of a
    /// first sync). Must be called on the runtime.
    fn headers_session(&self) -> Session<'_> {
        let start = self
            .tip
            .lock()
            .ok()
            .and_then(|t| *t)
            .unwrap_or_else(|| anchor(self.network, self.start_height));
        let (node, client) = self
            .builder()
            .chain_state(ChainState::Checkpoint(start))
            .headers_only_sync()
            .build();
        let logging = bdk_kyoto::LoggingSubscribers {
            info_subscriber: client.info_rx,
            warning_subscriber: client.warn_rx,
        };
        Session::start(self, node, logging, client.requester, Some(client.event_rx))
    }
}

/// Shakes hands with one peer; its claimed height.
fn check_peer(
    name: &str,
    addr: SocketAddr,
    network: Network,
    timeout: Duration,
) -> Result<u32, CbfError> {
    match probe::hello(addr, network, timeout) {
        Ok(hello) => {
            if !hello.services.has(ServiceFlags::COMPACT_FILTERS)
                || !hello.services.has(ServiceFlags::NETWORK)
            {
                return Err(CbfError::NoFilters {
                    peer: name.to_string(),
                    agent: hello.user_agent,
                });
            }
            Ok(u32::try_from(hello.start_height).unwrap_or(0))
        }
        Err(probe::Failure::Connect(e)) => Err(CbfError::Unreachable {
            peer: name.to_string(),
            timeout_secs: timeout.as_secs(),
            reason: e.to_string(),
        }),
        Err(probe::Failure::NoHandshake(reason)) => {
            match probe::which_network(addr, Some(network), timeout.min(Duration::from_secs(5))) {
                Some(other) => Err(CbfError::WrongNetwork {
                    peer: name.to_string(),
                    node: other.to_core_arg().into(),
                    wallet: String::new(),
                    expected: network.to_core_arg().into(),
                }),
                None => Err(CbfError::NoHandshake {
                    peer: name.to_string(),
                    network: network.to_core_arg().into(),
                    reason,
                }),
            }
        }
    }
}

/// A running light client: its node task, its messages, and the last warning it gave.
struct Session<'a> {
    cbf: &'a Cbf,
    requester: Requester,
    node: tokio::task::JoinHandle<Result<(), NodeError>>,
    info: Receiver<Info>,
    warnings: UnboundedReceiver<Warning>,
    /// Header events of a session without a wallet (a sync's go to its update subscriber).
    events: Option<UnboundedReceiver<Event>>,
    last_warning: Option<String>,
}

impl<'a> Session<'a> {
    fn start(
        cbf: &'a Cbf,
        node: bdk_kyoto::Node,
        logging: bdk_kyoto::LoggingSubscribers,
        requester: Requester,
        events: Option<UnboundedReceiver<Event>>,
    ) -> Self {
        Session {
            cbf,
            requester,
            node: tokio::spawn(node.run()),
            info: logging.info_subscriber,
            warnings: logging.warning_subscriber,
            events,
            last_warning: None,
        }
    }

    /// Time without any news from the client after which it counts as stalled.
    fn stall(&self) -> Duration {
        (self.cbf.timeout * 4).max(Duration::from_secs(60))
    }

    fn failed(&self, what: &str) -> ChainError {
        let warning = self
            .last_warning
            .as_deref()
            .map_or_else(String::new, |w| format!(" (last warning: {w})"));
        self.cbf.client_error(format!("{what}{warning}"))
    }

    /// The node stopped by itself: why.
    fn ended(&self, result: Result<Result<(), NodeError>, tokio::task::JoinError>) -> ChainError {
        let why = match result {
            Ok(Ok(())) => "the light client stopped".to_string(),
            Ok(Err(e)) => format!(
                "lost the peers ({e}): every peer given must stay connected; check that each \
                 is up"
            ),
            Err(e) => format!("the light client failed: {e}"),
        };
        self.failed(&why)
    }

    /// The client's next wallet update, with progress; an error when the node stops or gives
    /// no news for [`Session::stall`].
    async fn next_update(
        &mut self,
        subscriber: &mut bdk_kyoto::UpdateSubscriber<bdk_kyoto::wallets::Single>,
        progress: &mut ProgressFn,
    ) -> Result<bdk_kyoto::Update, ChainError> {
        let stall = self.stall();
        let update = subscriber.update();
        tokio::pin!(update);
        let mut deadline = tokio::time::Instant::now() + stall;
        loop {
            tokio::select! {
                u = &mut update => {
                    return u.map_err(|e| self.failed(&e.to_string()));
                }
                Some(info) = self.info.recv() => {
                    deadline = tokio::time::Instant::now() + stall;
                    if let Info::Progress(p) = info {
                        let permille = (p.fraction_complete().clamp(0.0, 1.0) * 1000.0) as u16;
                        progress(SyncProgress::Filters { permille, tip: p.chain_height() });
                    }
                }
                Some(w) = self.warnings.recv() => {
                    self.last_warning = Some(w.to_string());
                }
                r = &mut self.node => {
                    return Err(self.ended(r));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(self.failed(&format!(
                        "no progress in {} s", stall.as_secs()
                    )));
                }
            }
        }
    }

    /// Waits until a peer has completed its handshake (the light client announces pending
    /// transactions then) or, with `headers`, until the headers reach the peers' tip.
    async fn wait_for(&mut self, headers: bool) -> Result<(), ChainError> {
        let limit = self.stall();
        let deadline = tokio::time::Instant::now() + limit;
        let mut events = self.events.take();
        let result = loop {
            tokio::select! {
                Some(info) = self.info.recv() => {
                    if !headers && matches!(info, Info::SuccessfulHandshake | Info::ConnectionsMet) {
                        break Ok(());
                    }
                }
                Some(event) = async { events.as_mut()?.recv().await }, if headers => {
                    if matches!(event, Event::FiltersSynced(_)) {
                        break Ok(());
                    }
                }
                Some(w) = self.warnings.recv() => {
                    self.last_warning = Some(w.to_string());
                }
                r = &mut self.node => {
                    break Err(self.ended(r));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let what = if headers { "the headers did not reach the tip" } else {
                        "no peer completed a handshake"
                    };
                    break Err(self.failed(&format!("{what} in {} s", limit.as_secs())));
                }
            }
        };
        self.events = events;
        result
    }

    /// The fee hint: the average fee rate of the best block, raised to the highest minimum
    /// the peers relay (BIP-0133 `feefilter`); `None` when that block paid no fee.
    async fn fee_hint(&mut self) -> Option<FeeRate> {
        let limit = self.cbf.timeout;
        let tip = tokio::time::timeout(limit, self.requester.chain_tip())
            .await
            .ok()?
            .ok()?;
        let average = tokio::time::timeout(limit, self.requester.average_fee_rate(tip.hash))
            .await
            .ok()?
            .ok()?;
        if average == FeeRate::ZERO {
            return None;
        }
        let floor = tokio::time::timeout(limit, self.requester.broadcast_min_feerate())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(FeeRate::ZERO);
        Some(average.max(floor))
    }

    /// Asks the node to stop and waits a moment for it.
    async fn stop(self) {
        let _ = self.requester.shutdown();
        if !self.node.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.node).await;
        }
    }
}

impl ChainSource for Cbf {
    fn describe(&self) -> String {
        format!("compact block filters from {}", self.peer_list())
    }

    /// Filters from the wallet's last checkpoint (a first sync from the start height): the
    /// blocks whose filter matches one of the wallet's scripts are fetched and applied, the
    /// headers give the chain (reorgs replace blocks from the point of agreement). No mempool.
    fn sync(&self, wallet: &mut CkmWallet, progress: ProgressFn) -> Result<u32, ChainError> {
        self.walk(wallet, progress, false)
    }

    /// Every filter again from the start height.
    fn full_scan(&self, wallet: &mut CkmWallet, progress: ProgressFn) -> Result<u32, ChainError> {
        self.walk(wallet, progress, true)
    }

    /// Announces `tx` to a peer and hands it over when asked. The P2P protocol has no answer
    /// for a refused transaction (Bitcoin Core sends none): success means a peer took it, and
    /// the next sync shows it only once it is mined.
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        let limit = self.timeout * 2;
        let refused = |reason: String| ChainError::Refused {
            source_name: self.describe(),
            reason,
        };
        self.runtime()?.block_on(async {
            let mut s = self.headers_session();
            let sent = match s.wait_for(false).await {
                Ok(()) => {
                    let sent =
                        tokio::time::timeout(limit, s.requester.submit_package(tx.clone())).await;
                    // Closing the connection right after the handover can make the peer drop
                    // the message unprocessed: stay connected a moment.
                    tokio::time::sleep(HANDOVER_GRACE).await;
                    sent
                }
                Err(e) => {
                    s.stop().await;
                    return Err(e);
                }
            };
            s.stop().await;
            match sent {
                Ok(Ok(_)) => Ok(tx.compute_txid()),
                Ok(Err(e)) => Err(refused(e.to_string())),
                Err(_) => Err(refused(format!(
                    "no peer asked for the transaction within {} s",
                    limit.as_secs()
                ))),
            }
        })
    }

    /// No estimator over P2P: the average fee rate of the best block, raised to the peers'
    /// relay minimum; `None` for a block without fees. `target_blocks` is not used.
    fn fee_estimate(&self, _target_blocks: u16) -> Result<Option<FeeRate>, ChainError> {
        self.runtime()?.block_on(async {
            let mut s = self.headers_session();
            let result = match s.wait_for(true).await {
                Ok(()) => Ok(s.fee_hint().await),
                Err(e) => Err(e),
            };
            s.stop().await;
            result
        })
    }

    /// The lowest height the peers claimed in their handshakes (a birth height lower than the
    /// truth only costs a longer first sync).
    fn tip(&self) -> Result<u32, ChainError> {
        Ok(self.claimed_tip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_resolve_with_or_without_a_port() {
        let a = resolve("127.0.0.1:18444", Network::Regtest).map(|a| a.port());
        assert_eq!(a.ok(), Some(18444));
        let a = resolve("127.0.0.1", Network::Bitcoin).map(|a| a.port());
        assert_eq!(a.ok(), Some(8333));
        let a = resolve("[::1]:1234", Network::Regtest).map(|a| a.port());
        assert_eq!(a.ok(), Some(1234));
        assert!(matches!(
            resolve("tcp://127.0.0.1:1", Network::Regtest),
            Err(CbfError::Address { .. })
        ));
    }

    #[test]
    fn anchors_skip_to_taproot_only_on_mainnet() {
        assert_eq!(anchor(Network::Bitcoin, 800_000).height, 709_631);
        assert_eq!(anchor(Network::Bitcoin, 709_632).height, 709_631);
        assert_eq!(anchor(Network::Bitcoin, 100).height, 0);
        assert_eq!(anchor(Network::Regtest, 800_000).height, 0);
    }

    #[test]
    fn no_peers_or_too_many_are_refused() {
        let e = Cbf::connect(&CbfConfig::new(vec![]), "w", Network::Regtest);
        assert!(matches!(e, Err(CbfError::Peers { .. })));
        let many = vec!["127.0.0.1:1".to_string(); MAX_PEERS + 1];
        let e = Cbf::connect(&CbfConfig::new(many), "w", Network::Regtest);
        assert!(matches!(e, Err(CbfError::Peers { ref extra }) if extra.contains("16 given")));
    }
}
