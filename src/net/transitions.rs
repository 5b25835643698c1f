//! Driving a key transition across the signers (coordinator side): the computation rounds
//! up to *prepare* ([`run_transition`]), then the decision by the members' votes
//! ([`settle`]): every member's ready vote makes a commit certificate, enough abort votes an
//! abort certificate, and the certificate is spread to every member. The coordinator never
//! decides on its own: [`gather_status`] and [`settle`] finish or roll back a transition from
//! what the members hold, whichever allowed coordinator runs them.

use std::collections::BTreeMap;

use super::client::{CallError, Client};
use super::coordinator::{call_all, call_each};
use crate::keys::{GroupKey, RosterEntry};
use crate::message::{CoordinatorToSigner, SessionId, SignerToCoordinator};
use crate::protocol::lifecycle::{
    Ballot, CertifiedTransition, Decision, DecisionCertificate, Joining, MemberStatus, SignedVote,
    TransitionAnswer, TransitionContext, TransitionCoordinator, TransitionError, TransitionRequest,
    VoteKind, WalletState,
};

/// Why a transition across signers failed (nothing was committed; the members were told to
/// abort).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionDriveError {
    /// A member failed or refused.
    #[error("the transition stopped at {stage}")]
    Signer {
        /// Protocol stage.
        stage: &'static str,
        /// The failure.
        #[source]
        source: CallError,
    },
    /// A member answered out of protocol.
    #[error("the transition stopped at {stage}: signer {index} answered out of protocol")]
    Protocol {
        /// Protocol stage.
        stage: &'static str,
        /// Roster index.
        index: u16,
    },
    /// The transition itself failed (a bad certificate, an inconsistent result).
    #[error("the transition failed")]
    Transition(#[source] Box<TransitionError>),
}

impl From<TransitionError> for TransitionDriveError {
    fn from(e: TransitionError) -> Self {
        TransitionDriveError::Transition(Box::new(e))
    }
}

fn transition_answer(
    stage: &'static str,
    index: u16,
    reply: Result<SignerToCoordinator, CallError>,
) -> Result<TransitionAnswer, TransitionDriveError> {
    match reply {
        Ok(SignerToCoordinator::Transition(a)) => Ok(a),
        Ok(_) => Err(TransitionDriveError::Protocol { stage, index }),
        Err(source) => Err(TransitionDriveError::Signer { stage, source }),
    }
}

/// A transition every member prepared: its record and every member's prepared vote.
#[derive(Debug, Clone)]
pub struct PreparedTransition {
    /// The record.
    pub record: CertifiedTransition,
    /// Prepared votes by member.
    pub prepared: BTreeMap<u16, SignedVote>,
}

/// Runs a transition across the members of `context.new_roster` (the URLs there are used)
/// up to and including *prepare*: on success every member holds the new share pending and
/// has signed prepared. On a failure before prepare the members are told to cancel; during
/// prepare, the members are asked for abort votes and an abort certificate is spread where
/// one forms ([`settle`]), otherwise the transition stays pending for `ckm wallet resume`.
///
/// # Errors
/// The first member failing or refusing; nothing is committed then.
pub async fn run_transition(
    client: &Client,
    context: TransitionContext,
    from: WalletState,
    joining: Option<Joining>,
) -> Result<PreparedTransition, TransitionDriveError> {
    let members: Vec<RosterEntry> = context.new_roster.entries().to_vec();
    let session = context.session;
    let mut record = None;
    let result = drive_transition(client, context, from, joining, &members, &mut record).await;
    if result.is_err() {
        cancel_transition(client, &members, session).await;
        if let Some(record) = record {
            let _ = settle(client, &members, &record, &BTreeMap::new(), Decision::Abort).await;
        }
    }
    result
}

async fn drive_transition(
    client: &Client,
    context: TransitionContext,
    from: WalletState,
    joining: Option<Joining>,
    members: &[RosterEntry],
    prepared_record: &mut Option<CertifiedTransition>,
) -> Result<PreparedTransition, TransitionDriveError> {
    let kind = context.kind;
    let newcomer = kind.newcomer().filter(|i| {
        context
            .new_roster
            .get(*i)
            .map(|e| from.roster.index_of(&e.identity) != Some(*i))
            .unwrap_or(false)
    });
    let mut machine = TransitionCoordinator::new(context.clone(), from)?;
    let begin: Vec<(RosterEntry, CoordinatorToSigner)> = members
        .iter()
        .map(|e| {
            let joining = if Some(e.index) == newcomer {
                joining.clone()
            } else {
                None
            };
            (
                e.clone(),
                CoordinatorToSigner::Transition(TransitionRequest::Begin {
                    context: context.clone(),
                    joining,
                }),
            )
        })
        .collect();
    for (index, reply) in call_each(client, begin).await {
        machine.add_begun(index, transition_answer("begin", index, reply)?)?;
    }
    let pick = |indexes: &[u16]| -> Vec<RosterEntry> {
        members
            .iter()
            .filter(|e| indexes.contains(&e.index))
            .cloned()
            .collect()
    };
    if kind.newcomer().is_some() {
        // Repair or enrolment (with or without a refresh): the helpers' deltas, then sigmas.
        let helpers = pick(&context.helpers);
        let calls = helpers
            .iter()
            .map(|e| {
                (
                    e.clone(),
                    CoordinatorToSigner::Transition(machine.repair_deltas(e.index)),
                )
            })
            .collect();
        for (index, reply) in call_each(client, calls).await {
            machine.add_sigma(index, transition_answer("repair", index, reply)?)?;
        }
    }
    if kind.refreshes() {
        let request = machine.refresh_round1()?;
        let calls = members
            .iter()
            .map(|e| (e.clone(), CoordinatorToSigner::Transition(request.clone())))
            .collect();
        for (index, reply) in call_each(client, calls).await {
            machine
                .add_refresh_sealed(index, transition_answer("refresh round 1", index, reply)?)?;
        }
        let calls = members
            .iter()
            .map(|e| {
                (
                    e.clone(),
                    CoordinatorToSigner::Transition(machine.refresh_round2(e.index)),
                )
            })
            .collect();
        for (index, reply) in call_each(client, calls).await {
            machine.add_certified(index, transition_answer("refresh round 2", index, reply)?)?;
        }
    } else {
        let request = machine.repair_sigmas()?;
        let calls = members
            .iter()
            .map(|e| {
                let r = if Some(e.index) == kind.newcomer() {
                    request.clone()
                } else {
                    machine.certify_request()
                };
                (e.clone(), CoordinatorToSigner::Transition(r))
            })
            .collect();
        for (index, reply) in call_each(client, calls).await {
            machine.add_certified(index, transition_answer("certification", index, reply)?)?;
        }
    }
    let prepare = machine.prepare_request()?;
    let record = machine.record()?;
    *prepared_record = Some(record.clone());
    let ballot = Ballot::new(&record.context, &record.state);
    let calls = members
        .iter()
        .map(|e| (e.clone(), CoordinatorToSigner::Transition(prepare.clone())))
        .collect();
    let mut prepared = BTreeMap::new();
    for (index, reply) in call_each(client, calls).await {
        match transition_answer("prepare", index, reply)? {
            TransitionAnswer::Prepared { vote }
                if vote.voter == index && ballot.check(&vote, VoteKind::Prepared).is_ok() =>
            {
                prepared.insert(index, vote);
            }
            _ => {
                return Err(TransitionDriveError::Protocol {
                    stage: "prepare",
                    index,
                })
            }
        }
    }
    Ok(PreparedTransition { record, prepared })
}

/// Tells every member to forget an unprepared transition (best effort).
pub async fn cancel_transition(client: &Client, members: &[RosterEntry], session: SessionId) {
    for (index, reply) in call_all(client, members, |_| {
        CoordinatorToSigner::Transition(TransitionRequest::Cancel { session })
    })
    .await
    {
        if let Err(e) = reply {
            tracing::debug!(signer = index, error = %e, "nothing to cancel there");
        }
    }
}

/// How far a transition's decision got.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// The certificate, when the votes made one.
    pub certificate: Option<DecisionCertificate>,
    /// Every vote gathered (ready or abort), by member.
    pub votes: BTreeMap<u16, SignedVote>,
    /// Members that gave no vote, with why.
    pub missing: Vec<(u16, String)>,
    /// Members that applied the certificate, with their epoch.
    pub applied: BTreeMap<u16, u64>,
    /// Members that did not (yet), with why.
    pub unapplied: Vec<(u16, String)>,
}

impl Settlement {
    /// The decision, when there is a certificate.
    pub fn decision(&self) -> Option<Decision> {
        self.certificate.as_ref().map(|c| c.decision)
    }
}

/// Decides a prepared transition from the members' votes and spreads the certificate. With
/// `aim` [`Decision::Commit`] and every prepared vote at hand, the members are asked for
/// ready; if that does not make a commit certificate (or `aim` is abort), those without a
/// vote are asked for abort. `known` votes (from [`gather_status`]) count too. Harmless to
/// repeat; it never decides on its own.
pub async fn settle(
    client: &Client,
    members: &[RosterEntry],
    record: &CertifiedTransition,
    prepared: &BTreeMap<u16, SignedVote>,
    aim: Decision,
) -> Settlement {
    settle_with(
        client,
        members,
        record,
        prepared,
        &BTreeMap::new(),
        None,
        aim,
    )
    .await
}

/// [`settle`] with votes and a certificate already known (from the members' status).
pub async fn settle_with(
    client: &Client,
    members: &[RosterEntry],
    record: &CertifiedTransition,
    prepared: &BTreeMap<u16, SignedVote>,
    known: &BTreeMap<u16, SignedVote>,
    certificate: Option<DecisionCertificate>,
    aim: Decision,
) -> Settlement {
    let session = record.context.session;
    let ballot = Ballot::new(&record.context, &record.state);
    let mut votes: BTreeMap<u16, SignedVote> = known.clone();
    let mut missing = BTreeMap::new();
    let mut certificate = certificate.filter(|c| ballot.check_certificate(c).is_ok());
    let without_vote = |votes: &BTreeMap<u16, SignedVote>| -> Vec<RosterEntry> {
        members
            .iter()
            .filter(|e| !votes.contains_key(&e.index))
            .cloned()
            .collect()
    };
    if certificate.is_none()
        && aim == Decision::Commit
        && ballot.check_all_prepared(prepared).is_ok()
    {
        let targets = without_vote(&votes);
        collect_votes(
            client,
            &targets,
            record,
            VoteKind::Ready,
            prepared,
            &ballot,
            &mut votes,
            &mut missing,
        )
        .await;
        certificate = ballot.certificate(votes.values());
    }
    if certificate.is_none() {
        let targets = without_vote(&votes);
        collect_votes(
            client,
            &targets,
            record,
            VoteKind::Abort,
            prepared,
            &ballot,
            &mut votes,
            &mut missing,
        )
        .await;
        certificate = ballot.certificate(votes.values());
    }
    let mut applied = BTreeMap::new();
    let mut unapplied = Vec::new();
    if let Some(cert) = &certificate {
        for (index, reply) in call_all(client, members, |_| {
            CoordinatorToSigner::Transition(TransitionRequest::Decide {
                session,
                certificate: cert.clone(),
            })
        })
        .await
        {
            match reply {
                Ok(SignerToCoordinator::Transition(TransitionAnswer::Decided {
                    decision,
                    epoch,
                })) if decision == cert.decision => {
                    applied.insert(index, epoch);
                }
                Ok(_) => {
                    unapplied.push((index, format!("signer {index} answered out of protocol")))
                }
                Err(e) => unapplied.push((index, e.to_string())),
            }
        }
    }
    Settlement {
        certificate,
        // `collect_votes` drops a member from `missing` when it votes.
        missing: missing.into_iter().collect(),
        votes,
        applied,
        unapplied,
    }
}

#[allow(clippy::too_many_arguments)]
async fn collect_votes(
    client: &Client,
    targets: &[RosterEntry],
    record: &CertifiedTransition,
    want: VoteKind,
    prepared: &BTreeMap<u16, SignedVote>,
    ballot: &Ballot,
    votes: &mut BTreeMap<u16, SignedVote>,
    missing: &mut BTreeMap<u16, String>,
) {
    let session = record.context.session;
    for (index, reply) in call_all(client, targets, |_| {
        CoordinatorToSigner::Transition(TransitionRequest::Vote {
            session,
            want,
            prepared: if want == VoteKind::Ready {
                prepared.clone()
            } else {
                BTreeMap::new()
            },
            record: (want == VoteKind::Abort).then(|| Box::new(record.clone())),
        })
    })
    .await
    {
        match reply {
            Ok(SignerToCoordinator::Transition(TransitionAnswer::Voted { vote }))
                if vote.voter == index
                    && (ballot.check(&vote, VoteKind::Ready).is_ok()
                        || ballot.check(&vote, VoteKind::Abort).is_ok()) =>
            {
                missing.remove(&index);
                votes.insert(index, vote);
            }
            Ok(_) => {
                missing.insert(index, format!("signer {index} answered out of protocol"));
            }
            Err(e) => {
                missing.insert(index, e.to_string());
            }
        }
    }
}

/// Shows the member a committed removal took out its removal and commit certificate, so
/// that it erases its share (best effort). Returns the epoch the removal led to.
///
/// # Errors
/// The removed member could not be reached, refused (it checks the record against its own
/// state and the certificate against the votes), or answered out of protocol.
pub async fn farewell(
    client: &Client,
    removed: &RosterEntry,
    record: &CertifiedTransition,
    certificate: &DecisionCertificate,
) -> Result<u64, CallError> {
    let reply = client
        .call(
            removed,
            &CoordinatorToSigner::Transition(TransitionRequest::Farewell {
                record: Box::new(record.clone()),
                certificate: certificate.clone(),
            }),
        )
        .await?;
    match reply {
        SignerToCoordinator::Transition(TransitionAnswer::Erased { epoch }) => Ok(epoch),
        _ => Err(CallError::BadResponse {
            index: removed.index,
            url: removed.url.clone(),
            reason: "answered a farewell out of protocol".into(),
        }),
    }
}

/// What each member holds of a wallet's transitions.
pub async fn gather_status(
    client: &Client,
    members: &[RosterEntry],
    wallet: GroupKey,
) -> Vec<(u16, Result<MemberStatus, String>)> {
    call_all(client, members, |_| {
        CoordinatorToSigner::Transition(TransitionRequest::Status { wallet })
    })
    .await
    .into_iter()
    .map(|(index, reply)| {
        let outcome = match reply {
            Ok(SignerToCoordinator::Transition(TransitionAnswer::Status(status))) => Ok(*status),
            Ok(_) => Err(format!("signer {index} answered out of protocol")),
            Err(e) => Err(e.to_string()),
        };
        (index, outcome)
    })
    .collect()
}

/// What [`resume_transition`] found and did.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The transition some member holds pending.
    pub record: Option<CertifiedTransition>,
    /// The longest committed history a member reports (for a coordinator that missed
    /// commits; check each transition before applying it).
    pub history: Vec<CertifiedTransition>,
    /// The decision reached and spread, for a pending one.
    pub settlement: Option<Settlement>,
    /// Every member's status as gathered.
    pub statuses: Vec<(u16, Result<MemberStatus, String>)>,
}

/// Finishes or rolls back a wallet's interrupted transition from what the members hold,
/// whichever allowed coordinator runs it and whatever its own database says: a certificate
/// any member holds is spread; otherwise the members are asked for ready (every prepared
/// vote at hand) or abort votes, and a certificate is spread if they make one.
/// `known` are the members the coordinator knows (the current roster); a newcomer named in
/// a pending record is asked too.
pub async fn resume_transition(
    client: &Client,
    known: &[RosterEntry],
    wallet: GroupKey,
) -> Resumed {
    let mut statuses = gather_status(client, known, wallet).await;
    let pending = statuses.iter().find_map(|(_, s)| {
        s.as_ref()
            .ok()
            .and_then(|s| s.pending.as_ref())
            .map(|p| p.record.clone())
    });
    let history = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok())
        .filter_map(|s| s.last.as_ref())
        .filter(|d| d.certificate.decision == Decision::Commit)
        .map(|d| d.transitions.clone())
        .max_by_key(Vec::len)
        .unwrap_or_default();
    let Some(record) = pending else {
        return Resumed {
            record: None,
            history,
            settlement: None,
            statuses,
        };
    };
    let members = record.state.roster.entries().to_vec();
    let extra: Vec<RosterEntry> = members
        .iter()
        .filter(|m| !known.iter().any(|k| k.identity == m.identity))
        .cloned()
        .collect();
    statuses.extend(gather_status(client, &extra, wallet).await);
    let session = record.context.session;
    let mut prepared = BTreeMap::new();
    let mut votes = BTreeMap::new();
    let mut certificate = None;
    for status in statuses.iter().filter_map(|(_, s)| s.as_ref().ok()) {
        if let Some(p) = status
            .pending
            .as_ref()
            .filter(|p| p.record.context.session == session)
        {
            prepared.insert(p.prepared.voter, p.prepared.clone());
            if let Some(v) = &p.standing {
                votes.insert(v.voter, v.clone());
            }
        }
        if let Some(d) = status.last.as_ref().filter(|d| d.session == session) {
            certificate = Some(d.certificate.clone());
        }
    }
    let settlement = settle_with(
        client,
        &members,
        &record,
        &prepared,
        &votes,
        certificate,
        Decision::Commit,
    )
    .await;
    Resumed {
        record: Some(record),
        history,
        settlement: Some(settlement),
        statuses,
    }
}
