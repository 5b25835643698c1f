//! The wallet's public side: BIP-0086-style descriptors `tr([fp]xpub/0/*)` / `…/1/*` built from
//! the group key and chain code (with the certified recovery leaf when the wallet has one:
//! `tr([fp]xpub/0/*,and_v(v:pk(REC/0/*),older(N)))`, see [`crate::recovery`]), and a
//! bdk_wallet wallet persisted in SQLite together with the wallet's metadata (roster of
//! signers, group public key package; never a secret).

pub mod export;
pub mod record;

use std::path::Path;
use std::str::FromStr;

use bdk_wallet::chain::ChainPosition;
use bdk_wallet::descriptor::policy::Condition;
use bdk_wallet::rusqlite::{self, Connection, OptionalExtension};
use bdk_wallet::{AddressInfo, KeychainKind, PersistedWallet, Wallet};
use bitcoin::{Address, Amount, FeeRate, Network, Psbt};
use serde::{Deserialize, Serialize};

mod commitments;

pub use commitments::WalletCommitments;

use crate::frost::shares::GroupPublic;
use crate::identity::IdentityPublic;
use crate::keys::{Keychain, WalletFingerprint};
pub use crate::keys::{Roster, RosterEntry};
use crate::protocol::dkg::{CertifiedKeygen, VerifyError};
use crate::protocol::lifecycle::{CertifiedTransition, History, WalletState};
use crate::recovery::{RecoveryPolicy, WalletScripts};

/// Errors of wallet operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    /// The descriptor could not be built.
    #[error("cannot build the wallet descriptor: {0}")]
    Descriptor(String),
    /// SQLite failed.
    #[error("wallet database error")]
    Database(#[from] rusqlite::Error),
    /// The database already holds a wallet.
    #[error("a wallet already exists at {0}")]
    Exists(String),
    /// No wallet in the database.
    #[error("no wallet found at {0}")]
    NotFound(String),
    /// bdk refused to create or load the wallet.
    #[error("bdk_wallet: {0}")]
    Bdk(String),
    /// Metadata could not be encoded or decoded.
    #[error("wallet metadata is malformed: {0}")]
    Metadata(String),
    /// The address is for another network.
    #[error("address {address} is not valid on {network}")]
    WrongNetwork {
        /// The address as given.
        address: String,
        /// The wallet's network.
        network: Network,
    },
    /// The payment could not be built (insufficient funds, dust, ...).
    #[error("cannot build the transaction: {0}")]
    Build(String),
    /// A recovery spend of a wallet without a recovery path.
    #[error("wallet '{0}' has no recovery path (it was created without --recovery-key)")]
    NoRecovery(String),
    /// No coin is deep enough for the recovery path yet.
    #[error("no coin can be spent through the recovery path yet: it needs {blocks} confirmations; {}", match .ready_at { Some(h) => format!("the oldest coin gets there at height {h} (the wallet's tip is {tip}; sync first if that is stale)"), None => "the wallet has no confirmed coin (sync first)".to_string() })]
    NotMature {
        /// The policy's timelock.
        blocks: u16,
        /// The wallet's chain tip.
        tip: u32,
        /// Height at which the oldest coin can be spent (as the next block).
        ready_at: Option<u32>,
    },
}

/// The external and internal descriptors (with checksums) of a group's wallet:
/// `tr([fp]xpub/0/*)#…` and `tr([fp]xpub/1/*)#…`.
///
/// # Errors
/// Only if miniscript rejects the descriptor it is handed (a bug).
pub fn descriptors(group: &GroupPublic, network: Network) -> Result<(String, String), WalletError> {
    descriptors_with(group, network, None)
}

/// The external and internal descriptors (with checksums) of a group's wallet with an optional
/// recovery path: `tr([fp]xpub/0/*,and_v(v:pk([…]REC/0/*),older(N)))#…` and `…/1/*…`;
/// without one they are those of [`descriptors`].
///
/// # Errors
/// miniscript refusing the descriptor.
pub fn descriptors_with(
    group: &GroupPublic,
    network: Network,
    recovery: Option<&RecoveryPolicy>,
) -> Result<(String, String), WalletError> {
    let scripts = WalletScripts::new(group, network, recovery)
        .map_err(|e| WalletError::Descriptor(e.to_string()))?;
    Ok((
        scripts.descriptor(Keychain::External).to_string(),
        scripts.descriptor(Keychain::Internal).to_string(),
    ))
}

/// Everything the coordinator keeps about a wallet besides bdk's own state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalletMeta {
    /// Wallet name (unique within a home).
    pub name: String,
    /// Bitcoin network.
    pub network: Network,
    /// The group's public key package and chain code.
    pub group: GroupPublic,
    /// The signers (URLs and TLS pins may change; indexes and identity keys are certified).
    pub roster: Roster,
    /// Default Electrum server for this wallet, if configured.
    #[serde(default)]
    pub electrum: Option<String>,
    /// The certified key generation (every signer's certificate); `None` only for wallets
    /// made before key generations were certified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keygen: Option<CertifiedKeygen>,
    /// The current epoch (0 until the first committed transition).
    #[serde(default)]
    pub epoch: u64,
    /// Every committed transition since the key generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<CertifiedTransition>,
    /// A transition that every member prepared; when `decided`, the coordinator committed to
    /// it and `ckm wallet resume` finishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingTransition>,
}

/// A prepared transition the coordinator is finishing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingTransition {
    /// The record.
    pub record: CertifiedTransition,
    /// The coordinator decided to commit (every member prepared).
    pub decided: bool,
    /// Members that acknowledged the commit.
    #[serde(default)]
    pub committed: Vec<u16>,
}

/// Why `wallet verify` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletVerifyError {
    /// The wallet predates certified key generation.
    #[error("this wallet has no certified key generation record (it was created by an older ckm)")]
    Uncertified,
    /// The record does not check out.
    #[error(transparent)]
    Record(#[from] VerifyError),
    /// The live roster names other identity keys than the certified one.
    #[error(
        "roster entry {index} names identity {live}, but the certified roster has {certified}"
    )]
    RosterChanged {
        /// Index.
        index: u16,
        /// Identity in the live roster.
        live: Box<crate::identity::IdentityPublic>,
        /// Identity in the certified roster.
        certified: crate::identity::IdentityPublic,
    },
    /// Name or network differ from the certified ones.
    #[error("the wallet's name or network differ from the certified ones")]
    ContextChanged,
    /// The transitions since the key generation do not check out.
    #[error("the wallet's history does not check out: {0}")]
    History(String),
}

impl WalletMeta {
    /// Re-checks the certified key generation offline: every certificate, the group derived
    /// from the round-1 commitments, and that the live roster, name and network are the
    /// certified ones. Returns the wallet fingerprint.
    ///
    /// # Errors
    /// [`WalletVerifyError`] naming the first problem.
    pub fn verify(&self) -> Result<WalletFingerprint, WalletVerifyError> {
        let keygen = self.keygen.as_ref().ok_or(WalletVerifyError::Uncertified)?;
        let genesis = match self.transitions.first() {
            None => self.group.clone(),
            Some(_) => {
                let broadcasts = keygen
                    .round1
                    .iter()
                    .filter_map(|(i, b)| {
                        crate::frost::identifier(*i).ok().map(|id| (id, b.clone()))
                    })
                    .collect();
                crate::frost::pedersen::group_from_broadcasts(&broadcasts)
                    .map_err(|e| WalletVerifyError::History(e.to_string()))?
            }
        };
        let fingerprint = keygen.verify(&genesis)?;
        let state = self
            .history()
            .ok_or(WalletVerifyError::Uncertified)?
            .verify()
            .map_err(|e| WalletVerifyError::History(e.to_string()))?;
        if state.epoch != self.epoch || state.group != self.group {
            return Err(WalletVerifyError::History(format!(
                "the history ends at epoch {} but the wallet is at epoch {}",
                state.epoch, self.epoch
            )));
        }
        if keygen.context.wallet != self.name || keygen.context.network != self.network {
            return Err(WalletVerifyError::ContextChanged);
        }
        let current = self.current_state();
        let certified = current.roster.entries();
        if certified.len() != self.roster.entries().len() {
            return Err(WalletVerifyError::ContextChanged);
        }
        for (live, cert) in self.roster.entries().iter().zip(certified) {
            if live.identity != cert.identity || live.index != cert.index {
                return Err(WalletVerifyError::RosterChanged {
                    index: live.index,
                    live: Box::new(live.identity),
                    certified: cert.identity,
                });
            }
        }
        Ok(fingerprint)
    }

    /// The certified history (key generation and transitions), when there is one.
    pub fn history(&self) -> Option<History> {
        self.keygen.as_ref().map(|k| History {
            keygen: k.clone(),
            transitions: self.transitions.clone(),
        })
    }

    /// The wallet's current state (epoch, roster, verifying shares).
    pub fn current_state(&self) -> WalletState {
        WalletState {
            epoch: self.epoch,
            roster: self.roster.clone(),
            group: self.group.clone(),
        }
    }

    /// The wallet fingerprint, when the wallet has a certified key generation.
    pub fn fingerprint(&self) -> Option<WalletFingerprint> {
        self.keygen.as_ref().and_then(|k| k.fingerprint().ok())
    }

    /// The external and internal descriptors (with the recovery leaf when the wallet has one).
    ///
    /// # Errors
    /// See [`descriptors_with`].
    pub fn descriptors(&self) -> Result<(String, String), WalletError> {
        descriptors_with(&self.group, self.network, self.recovery())
    }

    /// The recovery path of the certified key generation, if the wallet has one.
    pub fn recovery(&self) -> Option<&RecoveryPolicy> {
        self.keygen
            .as_ref()
            .and_then(|k| k.context.recovery.as_ref())
    }

    /// The wallet's scripts (to derive any address independently of bdk).
    ///
    /// # Errors
    /// See [`descriptors_with`].
    pub fn scripts(&self) -> Result<WalletScripts, WalletError> {
        WalletScripts::new(&self.group, self.network, self.recovery())
            .map_err(|e| WalletError::Descriptor(e.to_string()))
    }
}

const META_TABLE: &str = "CREATE TABLE IF NOT EXISTS ckm_wallet (id INTEGER PRIMARY KEY CHECK (id = 0), meta TEXT NOT NULL)";

/// A ckm wallet: bdk_wallet over SQLite plus ckm's metadata in the same database.
#[derive(Debug)]
pub struct CkmWallet {
    meta: WalletMeta,
    wallet: PersistedWallet<Connection>,
    db: Connection,
}

impl CkmWallet {
    /// Creates the wallet database at `path` (which must not hold a wallet yet).
    ///
    /// # Errors
    /// An existing wallet, a database error or bdk refusing the descriptors.
    pub fn create(path: &Path, meta: WalletMeta) -> Result<Self, WalletError> {
        let mut db = Connection::open(path)?;
        db.execute(META_TABLE, [])?;
        db.execute(commitments::TABLE, [])?;
        db.execute(commitments::FLAGS, [])?;
        let existing: Option<String> = db
            .query_row("SELECT meta FROM ckm_wallet WHERE id = 0", [], |r| r.get(0))
            .optional()?;
        if existing.is_some() {
            return Err(WalletError::Exists(path.display().to_string()));
        }
        let (external, internal) = meta.descriptors()?;
        let wallet = Wallet::create(external, internal)
            .network(meta.network)
            .create_wallet(&mut db)
            .map_err(|e| WalletError::Bdk(e.to_string()))?;
        let text =
            serde_json::to_string(&meta).map_err(|e| WalletError::Metadata(e.to_string()))?;
        db.execute("INSERT INTO ckm_wallet (id, meta) VALUES (0, ?1)", [text])?;
        Ok(CkmWallet { meta, wallet, db })
    }

    /// Loads the wallet stored at `path`, checking bdk's descriptors against the metadata.
    ///
    /// # Errors
    /// No wallet there, a database error, or inconsistent contents.
    pub fn load(path: &Path) -> Result<Self, WalletError> {
        if !path.exists() {
            return Err(WalletError::NotFound(path.display().to_string()));
        }
        let mut db = Connection::open(path)?;
        db.execute(META_TABLE, [])?;
        db.execute(commitments::TABLE, [])?;
        db.execute(commitments::FLAGS, [])?;
        let text: Option<String> = db
            .query_row("SELECT meta FROM ckm_wallet WHERE id = 0", [], |r| r.get(0))
            .optional()?;
        let text = text.ok_or_else(|| WalletError::NotFound(path.display().to_string()))?;
        let meta: WalletMeta =
            serde_json::from_str(&text).map_err(|e| WalletError::Metadata(e.to_string()))?;
        let (external, internal) = meta.descriptors()?;
        let wallet = Wallet::load()
            .descriptor(KeychainKind::External, Some(external))
            .descriptor(KeychainKind::Internal, Some(internal))
            .check_network(meta.network)
            .load_wallet(&mut db)
            .map_err(|e| WalletError::Bdk(e.to_string()))?
            .ok_or_else(|| WalletError::NotFound(path.display().to_string()))?;
        Ok(CkmWallet { meta, wallet, db })
    }

    /// Replaces the stored metadata (e.g. a new default Electrum server).
    ///
    /// # Errors
    /// Database errors.
    pub fn set_meta(&mut self, meta: WalletMeta) -> Result<(), WalletError> {
        let text =
            serde_json::to_string(&meta).map_err(|e| WalletError::Metadata(e.to_string()))?;
        self.db
            .execute("UPDATE ckm_wallet SET meta = ?1 WHERE id = 0", [text])?;
        self.meta = meta;
        Ok(())
    }

    /// The preprocessed commitments `coordinator` holds for this wallet's current epoch,
    /// with the metadata (both borrowed at once, for one-round signing).
    pub fn commitments(
        &self,
        coordinator: &IdentityPublic,
    ) -> (&WalletMeta, WalletCommitments<'_>) {
        (
            &self.meta,
            WalletCommitments::new(&self.db, coordinator, self.meta.epoch),
        )
    }

    /// The wallet's metadata.
    pub fn meta(&self) -> &WalletMeta {
        &self.meta
    }

    /// The underlying bdk wallet.
    pub fn bdk(&self) -> &Wallet {
        &self.wallet
    }

    /// The underlying bdk wallet, mutably (remember to [`CkmWallet::persist`]).
    pub fn bdk_mut(&mut self) -> &mut Wallet {
        &mut self.wallet
    }

    /// Writes bdk's pending changes to SQLite.
    ///
    /// # Errors
    /// Database errors.
    pub fn persist(&mut self) -> Result<(), WalletError> {
        self.wallet.persist(&mut self.db)?;
        Ok(())
    }

    /// Reveals and persists the next receive address.
    ///
    /// # Errors
    /// Database errors.
    pub fn reveal_next_address(&mut self) -> Result<AddressInfo, WalletError> {
        let info = self.wallet.reveal_next_address(KeychainKind::External);
        self.persist()?;
        Ok(info)
    }

    /// Parses an address and checks it belongs to the wallet's network.
    ///
    /// # Errors
    /// Malformed address or another network.
    pub fn parse_address(&self, text: &str) -> Result<Address, WalletError> {
        let wrong = || WalletError::WrongNetwork {
            address: text.to_string(),
            network: self.meta.network,
        };
        Address::from_str(text)
            .map_err(|_| wrong())?
            .require_network(self.meta.network)
            .map_err(|_| wrong())
    }

    /// Builds an unsigned PSBT that sends every coin of the wallet to `to` (no change), at
    /// `fee_rate`.
    ///
    /// # Errors
    /// Nothing to spend, or other builder errors.
    pub fn build_sweep(&mut self, to: &Address, fee_rate: FeeRate) -> Result<Psbt, WalletError> {
        let has_recovery = self.meta.recovery().is_some();
        let mut builder = self.wallet.build_tx();
        builder.drain_wallet();
        builder.drain_to(to.script_pubkey());
        builder.fee_rate(fee_rate);
        if has_recovery {
            // The key path (see `build_payment`).
            builder.set_condition(Condition::default());
        }
        let psbt = builder
            .finish()
            .map_err(|e| WalletError::Build(e.to_string()))?;
        self.persist()?;
        Ok(psbt)
    }

    /// Builds an unsigned PSBT paying `amount` to `to` with change back to the wallet, at
    /// `fee_rate`; persists the revealed change address.
    ///
    /// # Errors
    /// Insufficient funds, dust amounts and other builder errors.
    pub fn build_payment(
        &mut self,
        to: &Address,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<Psbt, WalletError> {
        let has_recovery = self.meta.recovery().is_some();
        let mut builder = self.wallet.build_tx();
        builder.add_recipient(to.script_pubkey(), amount);
        builder.fee_rate(fee_rate);
        if has_recovery {
            // The key path: no timelock (bdk cannot tell which path is meant otherwise).
            builder.set_condition(Condition::default());
        }
        let psbt = builder
            .finish()
            .map_err(|e| WalletError::Build(e.to_string()))?;
        self.persist()?;
        Ok(psbt)
    }

    /// Builds an unsigned PSBT paying `amount` to `to` through the recovery path: the inputs
    /// carry `nSequence` = the policy's timelock, and BIP-0371 `tap_scripts` and
    /// `tap_key_origins` of the recovery keys, so any BIP-0371 signer holding a recovery key
    /// can sign it. Only coins at least `N` blocks deep are spent, unless `allow_immature`
    /// (such a transaction is valid only once each of its coins is `N` blocks deep; bitcoind
    /// refuses it before with `non-BIP68-final`). Change returns to the wallet.
    ///
    /// # Errors
    /// No recovery path, no coin deep enough, insufficient funds and other builder errors.
    pub fn build_recovery(
        &mut self,
        to: &Address,
        amount: Amount,
        fee_rate: FeeRate,
        allow_immature: bool,
    ) -> Result<Psbt, WalletError> {
        let policy = self
            .meta
            .recovery()
            .cloned()
            .ok_or_else(|| WalletError::NoRecovery(self.meta.name.clone()))?;
        let blocks = u32::from(policy.blocks());
        let tip = self.wallet.latest_checkpoint().height();
        let mut immature = Vec::new();
        let mut ready_at: Option<u32> = None;
        let mut mature = 0usize;
        for utxo in self.wallet.list_unspent() {
            let height = match utxo.chain_position {
                ChainPosition::Confirmed { anchor, .. } => Some(anchor.block_id.height),
                ChainPosition::Unconfirmed { .. } => None,
            };
            // Valid in the next block when tip + 1 >= height + N (BIP-0068).
            match height {
                Some(h) if tip + 1 >= h.saturating_add(blocks) => mature += 1,
                other => {
                    if let Some(h) = other {
                        let at = h.saturating_add(blocks).saturating_sub(1);
                        ready_at = Some(ready_at.map_or(at, |r| r.min(at)));
                    }
                    immature.push(utxo.outpoint);
                }
            }
        }
        if !allow_immature && mature == 0 {
            return Err(WalletError::NotMature {
                blocks: policy.blocks(),
                tip,
                ready_at,
            });
        }
        let mut builder = self.wallet.build_tx();
        builder.add_recipient(to.script_pubkey(), amount);
        builder.fee_rate(fee_rate);
        builder.set_condition(Condition {
            csv: Some(policy.sequence()),
            timelock: None,
        });
        if !allow_immature {
            builder.unspendable(immature);
        }
        let psbt = builder
            .finish()
            .map_err(|e| WalletError::Build(e.to_string()))?;
        if psbt
            .unsigned_tx
            .input
            .iter()
            .any(|i| i.sequence != policy.sequence())
            || psbt.inputs.iter().any(|i| i.tap_scripts.is_empty())
        {
            return Err(WalletError::Build(
                "bdk did not build a recovery-path spend (nSequence or tap_scripts missing)".into(),
            ));
        }
        self.persist()?;
        Ok(psbt)
    }
}
