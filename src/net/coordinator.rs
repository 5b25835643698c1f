//! The coordinator's protocol drivers over the network: they run the transport-free state
//! machines of [`crate::protocol`] — the certified key generation
//! ([`crate::protocol::dkg::DkgCoordinator`]) and co-signing
//! ([`crate::protocol::cosign::SigningCoordinator`]) — by sending what they return to the
//! signers and feeding their answers back.

use std::sync::Arc;

use bitcoin::{Network, Psbt, Transaction};
use tokio::task::JoinSet;

use super::client::{CallError, Client};
use crate::frost::pedersen::DkgParams;
use crate::frost::shares::GroupPublic;
use crate::identity::IdentityPublic;
use crate::keys::{GroupKey, Roster, RosterEntry};
use crate::message::{CoordinatorToSigner, SessionId, SignerToCoordinator, WalletRef};
use crate::protocol::cosign::{Round1Answer, SignError, SigningCoordinator, Step};
use crate::protocol::dkg::{CertifiedKeygen, CoordinatorError, DkgContext, DkgCoordinator};
use crate::recovery::RecoveryPolicy;
use crate::wallet::WalletMeta;

/// Why a key generation across signers failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// Bad group parameters or roster.
    #[error("invalid roster: {0}")]
    Roster(String),
    /// A signer failed or refused.
    #[error("key generation aborted in {stage}")]
    Signer {
        /// Protocol stage.
        stage: &'static str,
        /// The failure.
        #[source]
        source: CallError,
    },
    /// A signer answered with the wrong message.
    #[error("key generation aborted in {stage}: signer {index} answered out of protocol")]
    Protocol {
        /// Protocol stage.
        stage: &'static str,
        /// Roster index.
        index: u16,
    },
    /// The key generation itself failed (disagreement, malformed packages).
    #[error("key generation failed")]
    Dkg(#[from] CoordinatorError),
}

/// Runs a certified key generation for a `threshold`-of-`roster.len()` wallet across the
/// signers. Every signer must have approved every other as a peer.
///
/// # Errors
/// Any signer failing or refusing aborts the key generation; the error names it.
pub async fn create_wallet(
    client: &Client,
    name: &str,
    network: Network,
    threshold: u16,
    roster: &Roster,
) -> Result<(GroupPublic, CertifiedKeygen), CreateError> {
    create_wallet_with_recovery(client, name, network, threshold, roster, None).await
}

/// [`create_wallet`] with an optional timelocked recovery path, certified with the rest of
/// the key generation (every signer then enforces it when co-signing).
///
/// # Errors
/// Any signer failing or refusing aborts the key generation; the error names it.
pub async fn create_wallet_with_recovery(
    client: &Client,
    name: &str,
    network: Network,
    threshold: u16,
    roster: &Roster,
    recovery: Option<RecoveryPolicy>,
) -> Result<(GroupPublic, CertifiedKeygen), CreateError> {
    let params =
        DkgParams::new(threshold, roster.len()).map_err(|e| CreateError::Roster(e.to_string()))?;
    for r in roster.entries() {
        super::client::check_url(&r.url)
            .map_err(|e| CreateError::Roster(format!("signer {}: {}: {e}", r.index, r.url)))?;
    }
    let mut context = DkgContext::new(
        SessionId::random(&mut rand::rngs::OsRng),
        name,
        network,
        params,
        client.identity().public(),
        roster.clone(),
    )?;
    if let Some(policy) = recovery {
        context = context.with_recovery(policy)?;
    }
    let mut dkg = DkgCoordinator::new(context)?;
    let entries = Arc::new(roster.entries().to_vec());

    let begin = dkg.begin();
    for (index, reply) in call_all(client, &entries, |_| {
        CoordinatorToSigner::DkgBegin(begin.clone())
    })
    .await
    {
        match answer("round 1", index, reply)? {
            SignerToCoordinator::DkgRound1(a) => dkg.add_round1(index, a)?,
            _ => return Err(out_of_protocol("round 1", index)),
        }
    }

    let request = dkg.round1_request()?;
    for (index, reply) in call_all(client, &entries, |_| {
        CoordinatorToSigner::DkgRound1(request.clone())
    })
    .await
    {
        match answer("round 2", index, reply)? {
            SignerToCoordinator::DkgRound2(a) => dkg.add_round2(index, a)?,
            _ => return Err(out_of_protocol("round 2", index)),
        }
    }

    let mut requests = Vec::new();
    for e in entries.iter() {
        requests.push((
            e.clone(),
            CoordinatorToSigner::DkgRound2(dkg.round2_request(e.index)?),
        ));
    }
    for (index, reply) in call_each(client, requests).await {
        match answer("certification", index, reply)? {
            SignerToCoordinator::DkgCertified(a) => dkg.add_certified(index, a)?,
            _ => return Err(out_of_protocol("certification", index)),
        }
    }

    // Every signer certified the same result: only now do they verify all certificates and
    // write their shares.
    let confirm = dkg.confirm_request()?;
    for (index, reply) in call_all(client, &entries, |_| {
        CoordinatorToSigner::DkgConfirm(confirm.clone())
    })
    .await
    {
        match answer("confirmation", index, reply)? {
            SignerToCoordinator::DkgStored(a) => dkg.add_stored(index, a)?,
            _ => return Err(out_of_protocol("confirmation", index)),
        }
    }
    Ok(dkg.finish()?)
}

fn answer(
    stage: &'static str,
    _index: u16,
    reply: Result<SignerToCoordinator, CallError>,
) -> Result<SignerToCoordinator, CreateError> {
    reply.map_err(|source| CreateError::Signer { stage, source })
}

fn out_of_protocol(stage: &'static str, index: u16) -> CreateError {
    CreateError::Protocol { stage, index }
}

/// Sends a message to every roster entry in parallel; answers in roster order.
pub(super) async fn call_all(
    client: &Client,
    roster: &[RosterEntry],
    make: impl Fn(&RosterEntry) -> CoordinatorToSigner,
) -> Vec<(u16, Result<SignerToCoordinator, CallError>)> {
    call_each(
        client,
        roster.iter().map(|e| (e.clone(), make(e))).collect(),
    )
    .await
}

/// Sends each message to its signer in parallel; answers in roster order.
pub(super) async fn call_each(
    client: &Client,
    calls: Vec<(RosterEntry, CoordinatorToSigner)>,
) -> Vec<(u16, Result<SignerToCoordinator, CallError>)> {
    let mut set = JoinSet::new();
    for (entry, message) in calls {
        let client = client.clone();
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
pub type SignPsbtError = SignError;

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
    /// How it was signed.
    pub mode: SignMode,
    /// Signing sessions (attempts) started.
    pub sessions: usize,
}

/// How a PSBT was co-signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignMode {
    /// One round trip: every chosen signer's commitments were held.
    OneRound,
    /// One round after fetching commitments from signers short of them.
    PreprocessedFirst,
    /// Two interactive rounds (commit, share).
    TwoRounds,
    /// Three rounds: commit and reserve, statements, shares (a wallet-wide limit).
    WithStatements,
}

impl std::fmt::Display for SignMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignMode::OneRound => "one round",
            SignMode::PreprocessedFirst => "one round after preprocessing",
            SignMode::TwoRounds => "two rounds",
            SignMode::WithStatements => "three rounds with statements (wallet-wide limit)",
        })
    }
}

/// Co-signs `psbt` with the wallet's signers and finalizes it in place, driving a
/// [`SigningCoordinator`]: the first `t` signers to answer round 1 are used; a signer that
/// fails or returns an invalid share is excluded and signing restarts with a fresh session
/// while `t` signers remain.
///
/// # Errors
/// The PSBT is not the wallet's, or fewer than `t` signers could sign; `psbt` is then
/// untouched.
pub async fn sign_psbt(
    client: &Client,
    meta: &WalletMeta,
    psbt: &mut Psbt,
) -> Result<SignReport, SignPsbtError> {
    let roster = meta.signing_roster();
    let mut machine = SigningCoordinator::with_recovery(
        psbt,
        &meta.group,
        meta.recovery(),
        roster.keys().copied().collect(),
    )?;
    let wallet = WalletRef {
        name: meta.name.clone(),
        group_key: GroupKey::of(&meta.group),
        epoch: meta.epoch,
    };
    let psbt_text = Arc::new(psbt.to_string());
    let mut rng = rand::rngs::OsRng;
    let mut step = machine.start(&mut rng)?;
    loop {
        match step {
            Step::Round1 { session, ask } => {
                let mut set = JoinSet::new();
                for index in ask {
                    let Some(entry) = roster.get(&index).cloned() else {
                        continue;
                    };
                    let client = client.clone();
                    let message = CoordinatorToSigner::SignCommit {
                        session,
                        wallet: wallet.clone(),
                        psbt: (*psbt_text).clone(),
                    };
                    set.spawn(async move { (entry.index, client.call(&entry, &message).await) });
                }
                step = Step::Wait;
                while let Some(joined) = set.join_next().await {
                    let Ok((index, reply)) = joined else { continue };
                    let answer = match reply {
                        Ok(SignerToCoordinator::SignCommitments {
                            commitments,
                            receipt,
                            statements_required,
                        }) => Ok(Round1Answer {
                            commitments,
                            receipt,
                            statements_required,
                        }),
                        Ok(_) => Err(format!("signer {index} answered out of protocol")),
                        Err(e) => Err(e.to_string()),
                    };
                    step = machine.commitments(index, answer, &mut rng)?;
                    if !matches!(step, Step::Wait) {
                        break;
                    }
                }
                // Late answers are not needed; their nonces expire on the signers.
                set.abort_all();
                if matches!(step, Step::Wait) {
                    // Every request returned without reaching t (cannot happen: the machine
                    // starts a new attempt or fails first); start over to be safe.
                    step = machine.start(&mut rng)?;
                }
            }
            Step::Statements {
                session,
                chosen,
                receipts,
            } => {
                let mut set = JoinSet::new();
                for index in chosen {
                    let Some(entry) = roster.get(&index).cloned() else {
                        continue;
                    };
                    let client = client.clone();
                    let message = CoordinatorToSigner::SignStatement {
                        session,
                        receipts: receipts.clone(),
                    };
                    set.spawn(async move { (entry.index, client.call(&entry, &message).await) });
                }
                step = Step::Wait;
                while let Some(joined) = set.join_next().await {
                    let Ok((index, reply)) = joined else { continue };
                    let answer = match reply {
                        Ok(SignerToCoordinator::SignStatement(s)) => Ok(s),
                        Ok(_) => Err(format!("signer {index} answered out of protocol")),
                        Err(e) => Err(e.to_string()),
                    };
                    step = machine.statement(index, answer, &mut rng)?;
                    if !matches!(step, Step::Wait) {
                        break;
                    }
                }
                set.abort_all();
                if matches!(step, Step::Wait) {
                    step = machine.start(&mut rng)?;
                }
            }
            Step::Round2 {
                session,
                chosen,
                packages,
                statements,
            } => {
                let packages = Arc::new(packages);
                let mut set = JoinSet::new();
                for index in chosen {
                    let Some(entry) = roster.get(&index).cloned() else {
                        continue;
                    };
                    let client = client.clone();
                    let message = CoordinatorToSigner::SignShare {
                        session,
                        packages: (*packages).clone(),
                        statements: statements.clone(),
                    };
                    set.spawn(async move { (entry.index, client.call(&entry, &message).await) });
                }
                step = Step::Wait;
                while let Some(joined) = set.join_next().await {
                    let Ok((index, reply)) = joined else { continue };
                    let answer = match reply {
                        Ok(SignerToCoordinator::SignShares { shares }) => Ok(shares),
                        Ok(_) => Err(format!("signer {index} answered out of protocol")),
                        Err(e) => Err(e.to_string()),
                    };
                    step = machine.shares(index, answer, psbt, &mut rng)?;
                }
                if matches!(step, Step::Wait) {
                    step = machine.start(&mut rng)?;
                }
            }
            Step::Done(outcome) => {
                return Ok(SignReport {
                    signer_identities: outcome
                        .signers
                        .iter()
                        .filter_map(|i| roster.get(i).map(|e| e.identity))
                        .collect(),
                    signers: outcome.signers,
                    culprits: outcome.culprits,
                    skipped: outcome.skipped,
                    transaction: outcome.transaction,
                    mode: if outcome.with_statements {
                        SignMode::WithStatements
                    } else {
                        SignMode::TwoRounds
                    },
                    sessions: outcome.attempts,
                });
            }
            Step::Wait => step = machine.start(&mut rng)?,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Epoch transitions
// ---------------------------------------------------------------------------------------
