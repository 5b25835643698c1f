//! The user's own Bitcoin Core node as the wallet's chain source, over JSON-RPC
//! (`bdk_bitcoind_rpc`): blocks from the wallet's last checkpoint (the first sync from a start
//! height), the mempool, reorgs followed, `sendrawtransaction` and `estimatesmartfee`.
//!
//! Reading order: [`BitcoindConfig`] (what the caller gives), the pure checks
//! ([`check_endpoint`], [`NodeInfo::check`], [`default_birth_height`]), then [`Bitcoind`], the
//! thin I/O shell that asks the node and feeds bdk.
//!
//! Every check that can refuse runs before the first block is applied, so a refused sync writes
//! nothing. The RPC password (or the cookie's) is read from its file when connecting, kept in a
//! zeroized buffer until handed to the HTTP transport, and never appears in a message.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bdk_bitcoind_rpc::bitcoincore_rpc::jsonrpc;
use bdk_bitcoind_rpc::bitcoincore_rpc::{self, RpcApi};
use bdk_bitcoind_rpc::Emitter;
use bitcoin::{FeeRate, Network, Transaction, Txid};
use zeroize::Zeroizing;

use super::electrum::fee_rate_of_btc_per_kvb;
use super::{ChainError, ChainSource, ProgressFn, SyncProgress};
use crate::wallet::CkmWallet;
use http::{Http, HttpError};

mod http;

/// Seconds before an unanswered request (or a connection attempt) fails, by default.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// Taproot's activation height on mainnet (BIP-0341): no ckm wallet has a coin before it.
pub const MAINNET_TAPROOT_HEIGHT: u32 = 709_632;

/// Blocks applied between two saves of the wallet during a long sync (an interrupted sync
/// resumes from the last save).
const PERSIST_EVERY: u32 = 1_000;

/// The start height of a first sync when none is given: Taproot's activation on mainnet, 0
/// elsewhere (test chains are short).
pub fn default_birth_height(network: Network) -> u32 {
    if network == Network::Bitcoin {
        MAINNET_TAPROOT_HEIGHT
    } else {
        0
    }
}

/// Bitcoin Core's default RPC port on `network`.
pub fn default_rpc_port(network: Network) -> u16 {
    match network.to_core_arg() {
        "main" => 8332,
        "test" => 18332,
        "testnet4" => 48332,
        "signet" => 38332,
        _ => 18443,
    }
}

/// How to authenticate to the node. Only file paths: the secrets are read when connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcAuth {
    /// The node's cookie file (`user:password`, rewritten at every start of bitcoind).
    Cookie(PathBuf),
    /// `rpcuser` and a file holding the password (`rpcpassword`/`rpcauth`).
    UserPassFile {
        /// The RPC user.
        user: String,
        /// A file whose first line is the password.
        pass_file: PathBuf,
    },
}

impl RpcAuth {
    /// The file the credentials come from, for messages.
    pub fn file(&self) -> &Path {
        match self {
            RpcAuth::Cookie(p) => p,
            RpcAuth::UserPassFile { pass_file, .. } => pass_file,
        }
    }

    fn describe(&self) -> String {
        match self {
            RpcAuth::Cookie(p) => format!(
                "cookie file {}; bitcoind writes a new one at every start",
                p.display()
            ),
            RpcAuth::UserPassFile { user, pass_file } => {
                format!("user '{user}' with the password in {}", pass_file.display())
            }
        }
    }

    /// Reads `(user, password)` from the file.
    fn read(&self) -> Result<(String, Zeroizing<String>), BitcoindError> {
        let path = self.file();
        let read_err = |reason: String| BitcoindError::Credentials {
            path: path.to_path_buf(),
            reason,
        };
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?);
        let first = text.lines().next().unwrap_or("");
        match self {
            RpcAuth::Cookie(_) => {
                let (user, pass) = first
                    .split_once(':')
                    .ok_or_else(|| read_err("not a cookie file (no user:password line)".into()))?;
                Ok((user.to_string(), Zeroizing::new(pass.to_string())))
            }
            RpcAuth::UserPassFile { user, .. } => {
                if first.is_empty() {
                    return Err(read_err("the file is empty".into()));
                }
                Ok((user.clone(), Zeroizing::new(first.to_string())))
            }
        }
    }
}

/// What the caller gives to reach a node. See [`Bitcoind::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct BitcoindConfig {
    /// `http://host[:port]`; without a port, Core's default for the wallet's network.
    pub url: String,
    /// Credentials.
    pub auth: RpcAuth,
    /// The user says the link to a non-loopback host is private (VPN, SSH tunnel, LAN):
    /// credentials may go over plain HTTP. Default false.
    pub allow_insecure: bool,
    /// Request and connection timeout. Default [`DEFAULT_TIMEOUT_SECS`].
    pub timeout: Duration,
    /// Where a first sync starts (ignored once the wallet has synced). Default
    /// [`default_birth_height`] of the wallet's network.
    pub start_height: Option<u32>,
}

impl BitcoindConfig {
    /// A config with the defaults listed on each field.
    pub fn new(url: impl Into<String>, auth: RpcAuth) -> Self {
        BitcoindConfig {
            url: url.into(),
            auth,
            allow_insecure: false,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            start_height: None,
        }
    }
}

/// Why a node could not be used (or a request to it failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BitcoindError {
    /// The URL does not parse or names no usable host.
    #[error("bitcoind URL '{url}': {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Credentials would go in clear to a host off this machine.
    #[error(
        "refusing to send RPC credentials over plain http to {host}, which is not this machine: \
         reach the node through an SSH tunnel or a VPN and use its local address, or pass \
         --bitcoind-allow-insecure if the link is private"
    )]
    Insecure {
        /// The host.
        host: String,
    },
    /// The credentials file cannot be read.
    #[error("cannot read the bitcoind credentials from {}: {reason}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The node refused the credentials (HTTP 401).
    #[error("bitcoind at {url} refused the credentials ({auth}): check the file")]
    Unauthorized {
        /// The node.
        url: String,
        /// Which credentials, by file.
        auth: String,
    },
    /// No answer (refused, unreachable, timed out).
    #[error("bitcoind at {url} cannot be reached (timeout {timeout_secs} s): {reason}")]
    Unreachable {
        /// The node.
        url: String,
        /// The timeout in force.
        timeout_secs: u64,
        /// The socket error.
        reason: String,
    },
    /// The node follows another chain than the wallet.
    #[error("bitcoind at {url} is on {node}, but wallet '{wallet}' is on {expected}")]
    WrongNetwork {
        /// The node.
        url: String,
        /// The node's chain, as it names it.
        node: String,
        /// The wallet.
        wallet: String,
        /// The wallet's chain, in Core's names.
        expected: String,
    },
    /// The node is still catching up.
    #[error(
        "bitcoind at {url} is in initial block download ({blocks} of {headers} blocks): sync \
         again when it has caught up"
    )]
    InitialBlockDownload {
        /// The node.
        url: String,
        /// Blocks it has.
        blocks: u64,
        /// Headers it knows.
        headers: u64,
    },
    /// The node pruned blocks the sync needs.
    #[error(
        "bitcoind at {url} is pruned: it keeps blocks from {prune_height} on, but this sync \
         needs blocks from {needed}: give a later --birth-height if the wallet has no coin before it, or \
         use an unpruned node (or an Electrum server)"
    )]
    Pruned {
        /// The node.
        url: String,
        /// The first block the node still has.
        prune_height: u64,
        /// The first block the sync needs.
        needed: u32,
    },
    /// The node answered a request with an error, or with something unexpected.
    #[error("bitcoind at {url}: {method}: {reason}")]
    Rpc {
        /// The node.
        url: String,
        /// The RPC method.
        method: &'static str,
        /// The node's answer or the transport's error.
        reason: String,
    },
}

/// Checks a URL for use with credentials and resolves it to one socket address. Pure apart
/// from name resolution.
///
/// # Errors
/// [`BitcoindError::Url`]: not `http://host[:port]`, or the name does not resolve.
/// [`BitcoindError::Insecure`]: the host is not loopback and `allow_insecure` is false.
pub fn check_endpoint(
    url: &str,
    network: Network,
    allow_insecure: bool,
) -> Result<SocketAddr, BitcoindError> {
    let bad = |reason: &str| BitcoindError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            return Err(bad(
                "https is not supported by the RPC client: terminate TLS locally (e.g. stunnel) \
                 and give its http://127.0.0.1 address",
            ))
        }
        _ => return Err(bad("the scheme must be http")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials in the URL are not accepted: use --bitcoind-cookie or --bitcoind-user \
             with --bitcoind-pass-file",
        ));
    }
    let port = parsed.port().unwrap_or_else(|| default_rpc_port(network));
    let (loopback, host) = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => (ip.is_loopback(), ip.to_string()),
        Some(url::Host::Ipv6(ip)) => (ip.is_loopback(), ip.to_string()),
        Some(url::Host::Domain(d)) => (d.eq_ignore_ascii_case("localhost"), d.to_string()),
        None => return Err(bad("no host")),
    };
    if !loopback && !allow_insecure {
        return Err(BitcoindError::Insecure { host });
    }
    let addrs = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?;
    let mut addrs: Vec<SocketAddr> = addrs.collect();
    // A name that resolves to several addresses: loopback ones only when the name is
    // `localhost`, so that the check above holds for the address actually used.
    if loopback {
        addrs.retain(|a| a.ip().is_loopback());
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| bad(&format!("{host} resolves to no usable address")))
}

/// What `getblockchaininfo` says that a sync depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Core's chain name (`main`, `test`, `testnet4`, `signet`, `regtest`).
    pub chain: String,
    /// Blocks the node has validated.
    pub blocks: u64,
    /// Headers it knows.
    pub headers: u64,
    /// Still in initial block download.
    pub initial_block_download: bool,
    /// The first block a pruned node still has; `None` when not pruned.
    pub prune_height: Option<u64>,
}

impl NodeInfo {
    /// Reads the fields from a `getblockchaininfo` answer.
    ///
    /// # Errors
    /// A field is missing or of another type ([`BitcoindError::Rpc`]).
    pub fn from_json(url: &str, v: &serde_json::Value) -> Result<NodeInfo, BitcoindError> {
        let missing = |field: &str| BitcoindError::Rpc {
            url: url.to_string(),
            method: "getblockchaininfo",
            reason: format!("the answer has no valid '{field}'"),
        };
        let chain = v["chain"].as_str().ok_or_else(|| missing("chain"))?;
        let blocks = v["blocks"].as_u64().ok_or_else(|| missing("blocks"))?;
        let headers = v["headers"].as_u64().ok_or_else(|| missing("headers"))?;
        let ibd = v["initialblockdownload"]
            .as_bool()
            .ok_or_else(|| missing("initialblockdownload"))?;
        let pruned = v["pruned"].as_bool().unwrap_or(false);
        let prune_height = if pruned {
            Some(
                v["pruneheight"]
                    .as_u64()
                    .ok_or_else(|| missing("pruneheight"))?,
            )
        } else {
            None
        };
        Ok(NodeInfo {
            chain: chain.to_string(),
            blocks,
            headers,
            initial_block_download: ibd,
            prune_height,
        })
    }

    /// Whether a sync of wallet `wallet` on `network`, needing blocks from `needed` on, can
    /// run against this node.
    ///
    /// # Errors
    /// [`BitcoindError::WrongNetwork`], [`BitcoindError::InitialBlockDownload`],
    /// [`BitcoindError::Pruned`], in this order.
    pub fn check(
        &self,
        url: &str,
        wallet: &str,
        network: Network,
        needed: u32,
    ) -> Result<(), BitcoindError> {
        if self.chain != network.to_core_arg() {
            return Err(BitcoindError::WrongNetwork {
                url: url.to_string(),
                node: self.chain.clone(),
                wallet: wallet.to_string(),
                expected: network.to_core_arg().to_string(),
            });
        }
        if self.initial_block_download {
            return Err(BitcoindError::InitialBlockDownload {
                url: url.to_string(),
                blocks: self.blocks,
                headers: self.headers,
            });
        }
        if let Some(prune_height) = self.prune_height {
            if prune_height > u64::from(needed) && u64::from(needed) <= self.blocks {
                return Err(BitcoindError::Pruned {
                    url: url.to_string(),
                    prune_height,
                    needed,
                });
            }
        }
        Ok(())
    }
}

/// A connection to one Bitcoin Core node.
pub struct Bitcoind {
    url: String,
    auth: RpcAuth,
    timeout: Duration,
    start_height: u32,
    client: bitcoincore_rpc::Client,
}

impl std::fmt::Debug for Bitcoind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitcoind")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("start_height", &self.start_height)
            .finish_non_exhaustive()
    }
}

impl Bitcoind {
    /// Checks the endpoint (loopback or allowed), reads the credentials and asks the node for
    /// its chain, so that bad credentials, an unreachable node or another network show here.
    ///
    /// # Errors
    /// Any [`BitcoindError`] but [`BitcoindError::Pruned`] and
    /// [`BitcoindError::InitialBlockDownload`] (checked by a sync).
    pub fn connect(
        config: &BitcoindConfig,
        wallet: &str,
        network: Network,
    ) -> Result<Self, BitcoindError> {
        let (node, info) = Self::open(config, network)?;
        if info.chain != network.to_core_arg() {
            return Err(BitcoindError::WrongNetwork {
                url: node.url.clone(),
                node: info.chain,
                wallet: wallet.to_string(),
                expected: network.to_core_arg().to_string(),
            });
        }
        Ok(node)
    }

    /// Like [`Bitcoind::connect`] with no wallet to compare with: returns what the node says
    /// of itself (its chain among it). A URL without a port gets mainnet's default port, and a
    /// first sync the default start height of the node's chain.
    ///
    /// # Errors
    /// As [`Bitcoind::connect`], but for [`BitcoindError::WrongNetwork`].
    pub fn connect_any(config: &BitcoindConfig) -> Result<(Self, NodeInfo), BitcoindError> {
        let (mut node, info) = Self::open(config, Network::Bitcoin)?;
        if config.start_height.is_none() {
            node.start_height = Network::from_core_arg(&info.chain)
                .map(default_birth_height)
                .unwrap_or(0);
        }
        Ok((node, info))
    }

    /// Checks the endpoint, reads the credentials, connects and asks `getblockchaininfo`.
    fn open(config: &BitcoindConfig, network: Network) -> Result<(Self, NodeInfo), BitcoindError> {
        let addr = check_endpoint(&config.url, network, config.allow_insecure)?;
        let (user, pass) = config.auth.read()?;
        let transport = Http::new(addr, &user, &pass, config.timeout);
        let client =
            bitcoincore_rpc::Client::from_jsonrpc(jsonrpc::Client::with_transport(transport));
        let node = Bitcoind {
            url: config.url.clone(),
            auth: config.auth.clone(),
            timeout: config.timeout,
            start_height: config
                .start_height
                .unwrap_or_else(|| default_birth_height(network)),
            client,
        };
        let info = node.info()?;
        Ok((node, info))
    }

    /// The node's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `getblockchaininfo`.
    ///
    /// # Errors
    /// The node fails or answers something else.
    pub fn info(&self) -> Result<NodeInfo, BitcoindError> {
        let v: serde_json::Value = self
            .client
            .call("getblockchaininfo", &[])
            .map_err(|e| self.rpc_error("getblockchaininfo", e))?;
        NodeInfo::from_json(&self.url, &v)
    }

    /// Classifies an RPC error: refused credentials and socket failures get their own
    /// variants; the rest is the node's or the transport's message.
    fn rpc_error(&self, method: &'static str, e: bitcoincore_rpc::Error) -> BitcoindError {
        if let bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Transport(t)) = &e {
            match t.downcast_ref::<HttpError>() {
                Some(HttpError::Unauthorized) => {
                    return BitcoindError::Unauthorized {
                        url: self.url.clone(),
                        auth: self.auth.describe(),
                    }
                }
                Some(HttpError::Io(io)) => {
                    let reason = match io.kind() {
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                            "no answer in time".to_string()
                        }
                        _ => io.to_string(),
                    };
                    return BitcoindError::Unreachable {
                        url: self.url.clone(),
                        timeout_secs: self.timeout.as_secs(),
                        reason,
                    };
                }
                _ => {}
            }
        }
        let reason = match &e {
            // The node's own words, e.g. `insufficient fee, rejecting replacement … (code -26)`.
            bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(rpc)) => {
                format!("{} (code {})", rpc.message, rpc.code)
            }
            other => other.to_string(),
        };
        BitcoindError::Rpc {
            url: self.url.clone(),
            method,
            reason,
        }
    }

    fn chain_error(&self, method: &'static str, e: bitcoincore_rpc::Error) -> ChainError {
        ChainError::Bitcoind(self.rpc_error(method, e))
    }

    /// Applies the blocks after the wallet's last checkpoint (`from_start`: all blocks from the
    /// start height, whatever the wallet has seen), then the mempool, and persists.
    fn walk(
        &self,
        wallet: &mut CkmWallet,
        mut progress: ProgressFn,
        from_start: bool,
    ) -> Result<u32, ChainError> {
        let mut last_cp = wallet.bdk().latest_checkpoint();
        if from_start {
            // Only the genesis block: the emitter starts over at the start height, and every
            // block it applies agrees with the wallet's chain where they overlap.
            while let Some(prev) = last_cp.prev() {
                last_cp = prev;
            }
        }
        let (start_height, needed) = if last_cp.height() == 0 {
            (self.start_height, self.start_height)
        } else {
            (0, last_cp.height().saturating_add(1))
        };
        let info = self.info()?;
        info.check(
            &self.url,
            &wallet.meta().name,
            wallet.meta().network,
            needed,
        )?;
        let tip = u32::try_from(info.blocks).unwrap_or(u32::MAX);

        let expected: Vec<Arc<Transaction>> = wallet
            .bdk()
            .transactions()
            .filter(|t| !t.chain_position.is_confirmed())
            .map(|t| t.tx_node.tx.clone())
            .collect();
        let mut emitter = Emitter::new(&self.client, last_cp, start_height, expected);
        let mut applied = 0u32;
        while let Some(event) = emitter
            .next_block()
            .map_err(|e| self.chain_error("getblock", e))?
        {
            let height = event.block_height();
            wallet
                .bdk_mut()
                .apply_block_connected_to(&event.block, height, event.connected_to())
                .map_err(|e| self.connect_error(e))?;
            applied += 1;
            if applied % PERSIST_EVERY == 0 {
                wallet.persist()?;
            }
            progress(SyncProgress::Block {
                height,
                tip: tip.max(height),
            });
        }
        let mempool = emitter
            .mempool()
            .map_err(|e| self.chain_error("getrawmempool", e))?;
        let bdk = wallet.bdk_mut();
        bdk.apply_evicted_txs(mempool.evicted);
        bdk.apply_unconfirmed_txs(mempool.update);
        wallet.persist()?;
        Ok(wallet.bdk().latest_checkpoint().height())
    }

    fn connect_error(&self, reason: impl std::fmt::Display) -> ChainError {
        ChainError::Connect {
            source_name: self.describe(),
            reason: reason.to_string(),
        }
    }
}

impl ChainSource for Bitcoind {
    fn describe(&self) -> String {
        format!("bitcoind at {}", self.url)
    }

    /// Blocks after the wallet's last checkpoint (a first sync from the start height), then
    /// the mempool. The node's chain, download state and pruning are checked first; a block
    /// that no longer connects (a reorg) is replaced from the point of agreement.
    fn sync(&self, wallet: &mut CkmWallet, progress: ProgressFn) -> Result<u32, ChainError> {
        self.walk(wallet, progress, false)
    }

    /// Every block again from the start height (`--birth-height`), then the mempool: finds
    /// coins the wallet's earlier syncs could not match (addresses it had not revealed).
    fn full_scan(&self, wallet: &mut CkmWallet, progress: ProgressFn) -> Result<u32, ChainError> {
        self.walk(wallet, progress, true)
    }

    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.client.send_raw_transaction(tx).map_err(|e| {
            match self.rpc_error("sendrawtransaction", e) {
                BitcoindError::Rpc { reason, .. } => ChainError::Refused {
                    source_name: self.describe(),
                    reason,
                },
                other => ChainError::Bitcoind(other),
            }
        })
    }

    /// `estimatesmartfee`: BTC per kvB; no `feerate` in the answer (a node without enough
    /// data) is `None`.
    fn fee_estimate(&self, target_blocks: u16) -> Result<Option<FeeRate>, ChainError> {
        let v: serde_json::Value = self
            .client
            .call(
                "estimatesmartfee",
                &[serde_json::Value::from(target_blocks.max(1))],
            )
            .map_err(|e| self.chain_error("estimatesmartfee", e))?;
        Ok(v["feerate"].as_f64().and_then(fee_rate_of_btc_per_kvb))
    }

    fn tip(&self) -> Result<u32, ChainError> {
        let count = self
            .client
            .get_block_count()
            .map_err(|e| self.chain_error("getblockcount", e))?;
        u32::try_from(count).map_err(|_| {
            ChainError::Bitcoind(BitcoindError::Rpc {
                url: self.url.clone(),
                method: "getblockcount",
                reason: format!("height {count} out of range"),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(chain: &str, ibd: bool, prune_height: Option<u64>) -> NodeInfo {
        NodeInfo {
            chain: chain.into(),
            blocks: 1_000,
            headers: 1_000,
            initial_block_download: ibd,
            prune_height,
        }
    }

    #[test]
    fn birth_heights_and_ports() {
        assert_eq!(default_birth_height(Network::Bitcoin), 709_632);
        assert_eq!(default_birth_height(Network::Regtest), 0);
        assert_eq!(default_birth_height(Network::Testnet), 0);
        assert_eq!(default_rpc_port(Network::Regtest), 18443);
        assert_eq!(default_rpc_port(Network::Bitcoin), 8332);
    }

    #[test]
    fn credentials_leave_this_machine_only_when_allowed() {
        let net = Network::Regtest;
        let a = check_endpoint("http://127.0.0.1:18443", net, false).map(|a| a.port());
        assert_eq!(a.ok(), Some(18443));
        assert!(check_endpoint("http://[::1]", net, false).is_ok_and(|a| a.port() == 18443));
        assert!(check_endpoint("http://localhost:1", net, false).is_ok());
        let e = check_endpoint("http://192.0.2.7:8332", net, false);
        assert!(matches!(e, Err(BitcoindError::Insecure { ref host }) if host == "192.0.2.7"));
        assert!(check_endpoint("http://192.0.2.7:8332", net, true).is_ok());
        assert!(matches!(
            check_endpoint("https://127.0.0.1:8332", net, true),
            Err(BitcoindError::Url { .. })
        ));
        assert!(matches!(
            check_endpoint("http://u:p@127.0.0.1:8332", net, true),
            Err(BitcoindError::Url { .. })
        ));
        assert!(matches!(
            check_endpoint("127.0.0.1:8332", net, false),
            Err(BitcoindError::Url { .. })
        ));
    }

    #[test]
    fn node_checks_in_order() {
        let url = "http://127.0.0.1:8332";
        let net = Network::Regtest;
        assert!(info("regtest", false, None).check(url, "w", net, 0).is_ok());
        let e = info("signet", true, Some(5)).check(url, "w", net, 0);
        let text = e
            .as_ref()
            .map_err(ToString::to_string)
            .err()
            .unwrap_or_default();
        assert!(
            text.contains("signet") && text.contains("regtest"),
            "{text}"
        );
        assert!(matches!(
            info("regtest", true, None).check(url, "w", net, 0),
            Err(BitcoindError::InitialBlockDownload { .. })
        ));
        // Pruned below what is needed: fine; above: refused, saying what to do.
        assert!(info("regtest", false, Some(100))
            .check(url, "w", net, 100)
            .is_ok());
        let e = info("regtest", false, Some(101)).check(url, "w", net, 100);
        let text = e
            .as_ref()
            .map_err(ToString::to_string)
            .err()
            .unwrap_or_default();
        assert!(
            text.contains("101") && text.contains("--birth-height"),
            "{text}"
        );
        // Needing only blocks past the node's tip (an up-to-date wallet): fine.
        assert!(info("regtest", false, Some(900))
            .check(url, "w", net, 1_001)
            .is_ok());
    }

    #[test]
    fn node_info_from_json() {
        let v = serde_json::json!({"chain": "main", "blocks": 10, "headers": 12,
            "initialblockdownload": false, "pruned": true, "pruneheight": 3});
        let i = NodeInfo::from_json("u", &v).ok();
        assert_eq!(
            i.map(|i| (i.chain, i.prune_height)),
            Some(("main".into(), Some(3)))
        );
        let v = serde_json::json!({"chain": "main", "blocks": 10});
        assert!(NodeInfo::from_json("u", &v).is_err());
    }

    #[test]
    fn credentials_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("ckm-bitcoind-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let cookie = dir.join("cookie");
        std::fs::write(&cookie, "__cookie__:s3cret\n")?;
        let (u, p) = RpcAuth::Cookie(cookie.clone()).read()?;
        assert_eq!((u.as_str(), p.as_str()), ("__cookie__", "s3cret"));
        std::fs::write(&cookie, "nocolon")?;
        let e = RpcAuth::Cookie(cookie.clone())
            .read()
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("cookie") && !e.contains("nocolon"), "{e}");
        let pass = dir.join("pass");
        std::fs::write(&pass, "pw\r\n")?;
        let auth = RpcAuth::UserPassFile {
            user: "alice".into(),
            pass_file: pass,
        };
        let (u, p) = auth.read()?;
        assert_eq!((u.as_str(), p.as_str()), ("alice", "pw"));
        let missing = RpcAuth::Cookie(dir.join("absent"))
            .read()
            .err()
            .map(|e| e.to_string());
        assert!(missing.unwrap_or_default().contains("absent"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
