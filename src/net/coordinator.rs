//! The coordinator's protocol drivers over the network: DKG across signer processes (the
//! coordinator relays round-2 packages it cannot read and checks that every signer ends with
//! the same group) and PSBT co-signing with the first `t` signers that answer, excluding
//! unreachable, refusing or cheating signers and retrying with another subset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bitcoin::{Network, Psbt, Transaction};
use frost_secp256k1_tr as frost;
use tokio::task::JoinSet;

use super::client::{CallError, Client};
use crate::frost::dkg::{DkgError, DkgParams, DkgRelay};
use crate::frost::identifier;
use crate::frost::keys::GroupPublic;
use crate::identity::IdentityPublic;
use crate::message::{CoordinatorToSigner, Sealed, SessionId, SignerToCoordinator, WalletRef};
use crate::psbt::{CoordinateError, SigningSession};
use crate::signer::home::group_key_hex;
use crate::wallet::{RosterEntry, WalletMeta};

/// Why a DKG across signers failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// Bad group parameters or roster.
    #[error("invalid roster: {0}")]
    Roster(String),
    /// A signer failed or refused.
    #[error("DKG aborted in {stage}")]
    Signer {
        /// Protocol stage.
        stage: &'static str,
        /// The failure.
        #[source]
        source: CallError,
    },
    /// A signer answered with the wrong message.
    #[error("DKG aborted in {stage}: signer {index} answered out of protocol")]
    Protocol {
        /// Protocol stage.
        stage: &'static str,
        /// Roster index.
        index: u16,
    },
    /// The DKG itself failed (disagreement, malformed packages).
    #[error("DKG failed")]
    Dkg(#[from] DkgError),
}

/// Runs a DKG for a `threshold`-of-`roster.len()` wallet across the signers.
///
/// # Errors
/// Any signer failing or refusing aborts the DKG; the error names it.
pub async fn create_wallet(
    client: &Client,
    name: &str,
    network: Network,
    threshold: u16,
    roster: &[RosterEntry],
) -> Result<GroupPublic, CreateError> {
    let n =
        u16::try_from(roster.len()).map_err(|_| CreateError::Roster("too many signers".into()))?;
    let params = DkgParams::new(threshold, n)?;
    let mut seen = BTreeSet::new();
    for (i, r) in roster.iter().enumerate() {
        if usize::from(r.index) != i + 1 {
            return Err(CreateError::Roster("roster indexes must be 1..=n".into()));
        }
        if !seen.insert(r.identity) {
            return Err(CreateError::Roster(format!(
                "identity {} appears twice",
                r.identity
            )));
        }
        super::client::check_url(&r.url)
            .map_err(|e| CreateError::Roster(format!("signer {}: {}: {e}", r.index, r.url)))?;
    }
    let session = SessionId::random(&mut rand::rngs::OsRng);
    let roster = Arc::new(roster.to_vec());

    // Round 1.
    let replies = call_all(client, &roster, |entry| CoordinatorToSigner::DkgBegin {
        session,
        wallet: name.to_string(),
        network,
        params,
        roster: roster.to_vec(),
        index: entry.index,
    })
    .await;
    let mut relay: DkgRelay<Sealed> = DkgRelay::new(params);
    let mut broadcasts = BTreeMap::new();
    for (index, reply) in replies {
        match reply.map_err(|source| CreateError::Signer {
            stage: "round 1",
            source,
        })? {
            SignerToCoordinator::DkgRound1 { broadcast } => {
                relay.add_round1(id(index)?, broadcast.clone());
                broadcasts.insert(index, broadcast);
            }
            _ => {
                return Err(CreateError::Protocol {
                    stage: "round 1",
                    index,
                })
            }
        }
    }

    // Round 2: every signer gets every broadcast, answers with sealed packages.
    let broadcasts = Arc::new(broadcasts);
    let replies = call_all(client, &roster, |_| CoordinatorToSigner::DkgRound1 {
        session,
        broadcasts: (*broadcasts).clone(),
    })
    .await;
    let mut transcripts = BTreeMap::new();
    for (index, reply) in replies {
        match reply.map_err(|source| CreateError::Signer {
            stage: "round 2",
            source,
        })? {
            SignerToCoordinator::DkgRound2 { transcript, sealed } => {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&transcript, &mut hash).map_err(|_| {
                    CreateError::Protocol {
                        stage: "round 2",
                        index,
                    }
                })?;
                if sealed.len() != roster.len() - 1 || sealed.contains_key(&index) {
                    return Err(CreateError::Protocol {
                        stage: "round 2",
                        index,
                    });
                }
                let sealed = sealed
                    .into_iter()
                    .map(|(to, s)| id(to).map(|to| (to, s)))
                    .collect::<Result<BTreeMap<_, _>, _>>()?;
                relay.add_round2(id(index)?, hash, sealed);
                transcripts.insert(index, transcript);
            }
            _ => {
                return Err(CreateError::Protocol {
                    stage: "round 2",
                    index,
                })
            }
        }
    }

    // Round 3: each signer gets the packages addressed to it and finishes.
    let mut per_signer = BTreeMap::new();
    for entry in roster.iter() {
        let (sealed, _) = relay
            .round2_for(&id(entry.index)?)
            .ok_or(CreateError::Protocol {
                stage: "round 3",
                index: entry.index,
            })?;
        let sealed: BTreeMap<u16, Sealed> = sealed
            .into_iter()
            .map(|(from, s)| (crate::frost::keys::roster_index(&from), s))
            .collect();
        per_signer.insert(entry.index, sealed);
    }
    let per_signer = Arc::new(per_signer);
    let transcripts = Arc::new(transcripts);
    let replies = call_all(client, &roster, |entry| CoordinatorToSigner::DkgRound2 {
        session,
        sealed: per_signer.get(&entry.index).cloned().unwrap_or_default(),
        transcripts: (*transcripts).clone(),
    })
    .await;
    for (index, reply) in replies {
        match reply.map_err(|source| CreateError::Signer {
            stage: "round 3",
            source,
        })? {
            SignerToCoordinator::DkgDone { group } => relay.add_result(id(index)?, group),
            _ => {
                return Err(CreateError::Protocol {
                    stage: "round 3",
                    index,
                })
            }
        }
    }
    let group = relay.finish()?;

    // Everyone agrees: only now do the signers write their shares.
    let group_key = group_key_hex(&group);
    let replies = call_all(client, &roster, |_| CoordinatorToSigner::DkgConfirm {
        session,
        group_key: group_key.clone(),
    })
    .await;
    for (index, reply) in replies {
        match reply.map_err(|source| CreateError::Signer {
            stage: "confirmation",
            source,
        })? {
            SignerToCoordinator::DkgStored => {}
            _ => {
                return Err(CreateError::Protocol {
                    stage: "confirmation",
                    index,
                })
            }
        }
    }
    Ok(group)
}

fn id(index: u16) -> Result<frost::Identifier, CreateError> {
    identifier(index).map_err(|_| CreateError::Roster(format!("invalid index {index}")))
}

/// Sends a message to every roster entry in parallel; answers in roster order.
async fn call_all(
    client: &Client,
    roster: &Arc<Vec<RosterEntry>>,
    make: impl Fn(&RosterEntry) -> CoordinatorToSigner,
) -> Vec<(u16, Result<SignerToCoordinator, CallError>)> {
    let mut set = JoinSet::new();
    for entry in roster.iter() {
        let client = client.clone();
        let entry = entry.clone();
        let message = make(&entry);
        set.spawn(async move { (entry.index, client.call(&entry, &message).await) });
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok(pair) = joined {
            out.push(pair);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

/// Why co-signing across signers failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignPsbtError {
    /// The PSBT is not one this wallet can sign.
    #[error(transparent)]
    Coordinate(#[from] CoordinateError),
    /// Not enough signers answered, or too many refused or cheated.
    #[error("only {available} of the {need} required signers could sign{}", format_failures(.failures))]
    NotEnoughSigners {
        /// Signers that could still take part.
        available: usize,
        /// Threshold.
        need: u16,
        /// Why each excluded signer was excluded.
        failures: Vec<(u16, String)>,
        /// Signers that returned invalid shares.
        culprits: Vec<u16>,
    },
}

fn format_failures(failures: &[(u16, String)]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = failures.iter().map(|(_, m)| m.clone()).collect();
    format!(":\n  - {}", parts.join("\n  - "))
}

/// The outcome of a successful co-signing.
#[derive(Debug, Clone)]
pub struct SignReport {
    /// Roster indexes of the signers whose shares made the signatures.
    pub signers: Vec<u16>,
    /// Their identity keys.
    pub signer_identities: Vec<IdentityPublic>,
    /// Signers that returned invalid signature shares (excluded).
    pub culprits: Vec<u16>,
    /// Signers skipped (unreachable, refused) and why.
    pub skipped: Vec<(u16, String)>,
    /// The finalized transaction.
    pub transaction: Transaction,
}

/// Co-signs `psbt` with the wallet's signers and finalizes it in place. Uses the first `t`
/// signers to answer round 1; a signer that fails or returns an invalid share is excluded and
/// signing restarts with a fresh session while `t` signers remain.
///
/// # Errors
/// The PSBT is not the wallet's, or fewer than `t` signers could sign; `psbt` is then
/// untouched.
pub async fn sign_psbt(
    client: &Client,
    meta: &WalletMeta,
    psbt: &mut Psbt,
) -> Result<SignReport, SignPsbtError> {
    let session_core = SigningSession::new(psbt, &meta.group)?;
    let need = meta.group.threshold();
    let wallet = WalletRef {
        name: meta.name.clone(),
        group_key: group_key_hex(&meta.group),
    };
    let psbt_text = Arc::new(psbt.to_string());
    let mut failures: BTreeMap<u16, String> = BTreeMap::new();
    let mut culprits: BTreeSet<u16> = BTreeSet::new();
    loop {
        let candidates: Vec<RosterEntry> = meta
            .roster
            .iter()
            .filter(|r| !failures.contains_key(&r.index))
            .cloned()
            .collect();
        let not_enough = |failures: &BTreeMap<u16, String>, culprits: &BTreeSet<u16>, available| {
            SignPsbtError::NotEnoughSigners {
                available,
                need,
                failures: failures.iter().map(|(i, m)| (*i, m.clone())).collect(),
                culprits: culprits.iter().copied().collect(),
            }
        };
        if candidates.len() < usize::from(need) {
            return Err(not_enough(&failures, &culprits, candidates.len()));
        }
        let session = SessionId::random(&mut rand::rngs::OsRng);

        // Round 1: ask everyone still in, keep the first `need` to answer.
        let mut set = JoinSet::new();
        for entry in candidates.clone() {
            let client = client.clone();
            let message = CoordinatorToSigner::SignCommit {
                session,
                wallet: wallet.clone(),
                psbt: (*psbt_text).clone(),
            };
            set.spawn(async move { (entry.clone(), client.call(&entry, &message).await) });
        }
        let mut commitments = BTreeMap::new();
        let mut chosen: Vec<RosterEntry> = Vec::new();
        while let Some(joined) = set.join_next().await {
            let Ok((entry, reply)) = joined else { continue };
            match reply {
                Ok(SignerToCoordinator::SignCommitments { commitments: c }) => {
                    let Ok(fid) = identifier(entry.index) else {
                        continue;
                    };
                    commitments.insert(fid, c);
                    chosen.push(entry);
                    if chosen.len() == usize::from(need) {
                        break;
                    }
                }
                Ok(_) => {
                    failures.insert(
                        entry.index,
                        format!("signer {} answered out of protocol", entry.index),
                    );
                }
                Err(e) => {
                    tracing::info!(signer = entry.index, error = %e, "signer skipped in round 1");
                    failures.insert(entry.index, e.to_string());
                }
            }
        }
        // Late answers are not needed; their nonces expire on the signers.
        set.abort_all();
        if chosen.len() < usize::from(need) {
            let available = meta.roster.len() - failures.len();
            return Err(not_enough(
                &failures,
                &culprits,
                available.min(chosen.len()),
            ));
        }
        let packages = match session_core.signing_packages(&commitments) {
            Ok(p) => Arc::new(p),
            Err(CoordinateError::WrongCount { signer, .. }) => {
                failures.insert(
                    signer,
                    format!("signer {signer} sent a wrong number of commitments"),
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        };

        // Round 2: the chosen signers sign every input.
        let mut set = JoinSet::new();
        for entry in chosen.clone() {
            let client = client.clone();
            let message = CoordinatorToSigner::SignShare {
                session,
                packages: (*packages).clone(),
            };
            set.spawn(async move { (entry.clone(), client.call(&entry, &message).await) });
        }
        let mut shares = BTreeMap::new();
        let mut round2_failed = false;
        while let Some(joined) = set.join_next().await {
            let Ok((entry, reply)) = joined else { continue };
            match reply {
                Ok(SignerToCoordinator::SignShares { shares: s }) => {
                    if let Ok(fid) = identifier(entry.index) {
                        shares.insert(fid, s);
                    }
                }
                Ok(_) => {
                    round2_failed = true;
                    failures.insert(
                        entry.index,
                        format!("signer {} answered out of protocol", entry.index),
                    );
                }
                Err(e) => {
                    tracing::info!(signer = entry.index, error = %e, "signer failed in round 2");
                    round2_failed = true;
                    failures.insert(entry.index, e.to_string());
                }
            }
        }
        if round2_failed {
            continue;
        }
        match session_core.aggregate(&packages, &shares) {
            Ok(signatures) => {
                let transaction = session_core.finalize(psbt, &signatures)?;
                return Ok(SignReport {
                    signers: chosen.iter().map(|e| e.index).collect(),
                    signer_identities: chosen.iter().map(|e| e.identity).collect(),
                    culprits: culprits.into_iter().collect(),
                    skipped: failures.into_iter().collect(),
                    transaction,
                });
            }
            Err(CoordinateError::InvalidShares {
                culprits: found, ..
            }) => {
                for c in found {
                    tracing::warn!(
                        signer = c,
                        "signer returned an invalid signature share; excluded"
                    );
                    culprits.insert(c);
                    failures.insert(c, format!("signer {c} returned an invalid signature share"));
                }
            }
            Err(CoordinateError::WrongCount { signer, .. }) => {
                failures.insert(
                    signer,
                    format!("signer {signer} sent a wrong number of signature shares"),
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
}
