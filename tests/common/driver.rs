//! A hand-driven coordinator for tests that talk to real signer processes message by
//! message (in any order, with crafted contents): round 1, the statement round and round 2
//! of co-signing through the coordinator's real client, and aggregation of what came back.
//!
//! Include after `cluster.rs`:
//!
//! ```ignore
//! #[path = "common/driver.rs"]
//! mod driver;
//! ```
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bitcoin::Psbt;
use ckm::frost::identifier;
use ckm::keys::{GroupKey, RosterEntry};
use ckm::message::{CoordinatorToSigner, SessionId, SignerToCoordinator, WalletRef};
use ckm::net::client::{CallError, Client};
use ckm::protocol::roast::{NonceId, PreCommitment};
use ckm::protocol::spend_limits::{Receipt, Statement};
use ckm::psbt::SigningSession;
use ckm::wallet::{CkmWallet, WalletMeta};
use frost_secp256k1_tr::round1::SigningCommitments;
use frost_secp256k1_tr::round2::SignatureShare;
use frost_secp256k1_tr::SigningPackage;

use crate::cluster::Cluster;

/// What a signer answered in round 1.
#[derive(Debug, Clone)]
pub struct Committed {
    pub commitments: Vec<SigningCommitments>,
    pub receipt: Receipt,
    pub statements_required: bool,
}

/// A one-round answer: shares and fresh commitments.
pub type OneRoundAnswer = (Vec<SignatureShare>, Vec<PreCommitment>);

/// The coordinator's client and the wallet, driven by hand.
pub struct Driver {
    pub client: Client,
    pub rt: tokio::runtime::Runtime,
    pub meta: WalletMeta,
}

impl Driver {
    /// A driver for the cluster's wallet `name`, with the cluster coordinator's key.
    pub fn new(c: &Cluster, name: &str) -> Result<Self> {
        let meta = CkmWallet::load(&c.wallet_path_of(name))?.meta().clone();
        Ok(Driver {
            client: Client::new(c.coordinator_key()?, Duration::from_secs(30))?,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?,
            meta,
        })
    }

    /// Re-reads the wallet's roster (after a signer moved to another port).
    pub fn reload(&mut self, c: &Cluster, name: &str) -> Result<()> {
        self.meta = CkmWallet::load(&c.wallet_path_of(name))?.meta().clone();
        Ok(())
    }

    pub fn entry(&self, index: u16) -> Result<RosterEntry> {
        self.meta
            .roster
            .get(index)
            .cloned()
            .with_context(|| format!("no roster entry {index}"))
    }

    pub fn wallet_ref(&self) -> WalletRef {
        WalletRef {
            name: self.meta.name.clone(),
            group_key: GroupKey::of(&self.meta.group),
            epoch: self.meta.epoch,
        }
    }

    pub fn call(
        &self,
        index: u16,
        message: &CoordinatorToSigner,
    ) -> Result<Result<SignerToCoordinator, CallError>> {
        let entry = self.entry(index)?;
        Ok(self.rt.block_on(self.client.call(&entry, message)))
    }

    /// Round 1 at signer `index`.
    pub fn commit(
        &self,
        session: SessionId,
        psbt: &Psbt,
        index: u16,
    ) -> Result<Result<Committed, CallError>> {
        let reply = self.call(
            index,
            &CoordinatorToSigner::SignCommit {
                session,
                wallet: self.wallet_ref(),
                psbt: psbt.to_string(),
            },
        )?;
        Ok(match reply {
            Ok(SignerToCoordinator::SignCommitments {
                commitments,
                receipt,
                statements_required,
            }) => Ok(Committed {
                commitments,
                receipt,
                statements_required,
            }),
            Ok(other) => bail!("signer {index} answered round 1 with {other:?}"),
            Err(e) => Err(e),
        })
    }

    /// The statement round at signer `index`.
    pub fn statement(
        &self,
        session: SessionId,
        receipts: &BTreeMap<u16, Receipt>,
        index: u16,
    ) -> Result<Result<Statement, CallError>> {
        let reply = self.call(
            index,
            &CoordinatorToSigner::SignStatement {
                session,
                receipts: receipts.clone(),
            },
        )?;
        Ok(match reply {
            Ok(SignerToCoordinator::SignStatement(s)) => Ok(s),
            Ok(other) => bail!("signer {index} answered the statement round with {other:?}"),
            Err(e) => Err(e),
        })
    }

    /// Round 2 at signer `index`.
    pub fn sign(
        &self,
        session: SessionId,
        packages: &[SigningPackage],
        statements: &BTreeMap<u16, Statement>,
        index: u16,
    ) -> Result<Result<Vec<SignatureShare>, CallError>> {
        let reply = self.call(
            index,
            &CoordinatorToSigner::SignShare {
                session,
                packages: packages.to_vec(),
                statements: statements.clone(),
            },
        )?;
        Ok(match reply {
            Ok(SignerToCoordinator::SignShares { shares }) => Ok(shares),
            Ok(other) => bail!("signer {index} answered round 2 with {other:?}"),
            Err(e) => Err(e),
        })
    }

    /// The signing packages of `psbt` for these commitments.
    pub fn packages(
        &self,
        psbt: &Psbt,
        commitments: &BTreeMap<u16, Committed>,
    ) -> Result<Vec<SigningPackage>> {
        let session = SigningSession::new(psbt, &self.meta.group)?;
        let by_id = commitments
            .iter()
            .map(|(i, c)| Ok((identifier(*i)?, c.commitments.clone())))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(session.signing_packages(&by_id)?)
    }

    /// Aggregates and verifies the shares into a finalized copy of `psbt`: `Ok` only when
    /// every input's signature is valid (a spend the signers really authorised).
    pub fn aggregate(
        &self,
        psbt: &Psbt,
        packages: &[SigningPackage],
        shares: &BTreeMap<u16, Vec<SignatureShare>>,
    ) -> Result<Psbt> {
        let session = SigningSession::new(psbt, &self.meta.group)?;
        let by_id = shares
            .iter()
            .map(|(i, s)| Ok((identifier(*i)?, s.clone())))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let signatures = session.aggregate(packages, &by_id)?;
        let mut out = psbt.clone();
        session.finalize(&mut out, &signatures)?;
        Ok(out)
    }

    /// Preprocessing at signer `index`: its commitments (signature checked) and whether it
    /// needs the statement rounds.
    pub fn preprocess(
        &self,
        index: u16,
        count: u16,
    ) -> Result<Result<(Vec<PreCommitment>, bool), CallError>> {
        let reply = self.call(
            index,
            &CoordinatorToSigner::Preprocess {
                wallet: self.wallet_ref(),
                count,
            },
        )?;
        Ok(match reply {
            Ok(SignerToCoordinator::Preprocessed {
                batch,
                statements_required,
            }) => {
                let entry = self.entry(index)?;
                let c = batch.verify(
                    index,
                    &entry.identity,
                    &self.client.identity().public(),
                    &GroupKey::of(&self.meta.group),
                )?;
                Ok((c, statements_required))
            }
            Ok(other) => bail!("signer {index} answered preprocessing with {other:?}"),
            Err(e) => Err(e),
        })
    }

    /// One-round signing at signer `index`: its shares and fresh commitments.
    pub fn sign_preprocessed(
        &self,
        session: SessionId,
        psbt: &Psbt,
        packages: &[SigningPackage],
        nonces: &[NonceId],
        index: u16,
    ) -> Result<Result<OneRoundAnswer, CallError>> {
        let reply = self.call(
            index,
            &CoordinatorToSigner::SignPreprocessed {
                session,
                wallet: self.wallet_ref(),
                psbt: psbt.to_string(),
                commitments: compact(packages),
                nonces: nonces.to_vec(),
                more: Vec::new(),
            },
        )?;
        Ok(match reply {
            Ok(SignerToCoordinator::SignedPreprocessed { shares, fresh, .. }) => {
                Ok((shares, fresh.commitments))
            }
            Ok(other) => bail!("signer {index} answered one-round signing with {other:?}"),
            Err(e) => Err(e),
        })
    }

    /// The signing packages of `psbt` from preprocessed commitments (one per input each).
    pub fn packages_preprocessed(
        &self,
        psbt: &Psbt,
        commitments: &BTreeMap<u16, Vec<PreCommitment>>,
    ) -> Result<Vec<SigningPackage>> {
        let session = SigningSession::new(psbt, &self.meta.group)?;
        let by_id = commitments
            .iter()
            .map(|(i, c)| Ok((identifier(*i)?, c.iter().map(|p| p.commitments).collect())))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(session.signing_packages(&by_id)?)
    }
}

/// The commitments of `packages` (one per input) by signer, as one-round requests carry them.
pub fn compact(
    packages: &[SigningPackage],
) -> BTreeMap<u16, ckm::protocol::roast::InputCommitments> {
    let mut out: BTreeMap<u16, ckm::protocol::roast::InputCommitments> = BTreeMap::new();
    for package in packages {
        for (id, c) in package.signing_commitments() {
            out.entry(ckm::frost::shares::roster_index(id))
                .or_insert_with(|| ckm::protocol::roast::InputCommitments(Vec::new()))
                .0
                .push(*c);
        }
    }
    out
}
