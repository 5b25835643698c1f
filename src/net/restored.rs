//! Confirming a restored signer's epoch (coordinator side): the restored signer draws a
//! challenge, every other reachable member signs a statement of its epoch answering it, and
//! the restored signer checks them itself
//! ([`crate::protocol::lifecycle::confirm`]). The coordinator only carries messages: a
//! statement it forged or replayed fails the restored signer's check.

use super::client::{CallError, Client};
use super::coordinator::call_all;
use crate::keys::{GroupKey, RosterEntry};
use crate::message::{CoordinatorToSigner, SignerToCoordinator};
use crate::protocol::lifecycle::SignedStatement;

/// Why a restored signer's epoch was not confirmed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfirmRestoredError {
    /// The restored signer is not in the roster this coordinator knows.
    #[error("signer {index} is not a member of the wallet")]
    NotMember {
        /// The index given.
        index: u16,
    },
    /// The restored signer could not be asked, or refused.
    #[error("signer {index} {stage}")]
    Restored {
        /// Its index.
        index: u16,
        /// What failed.
        stage: &'static str,
        /// The failure.
        #[source]
        source: CallError,
    },
    /// An answer out of protocol.
    #[error("signer {index} answered out of protocol")]
    Protocol {
        /// Roster index.
        index: u16,
    },
}

/// What [`confirm_restored`] did.
#[derive(Debug, Clone)]
pub struct RestoredConfirmation {
    /// The epoch the restored signer holds (and now signs in, if `members` is not empty).
    pub epoch: u64,
    /// Whether it was confirmed already before this run.
    pub already: bool,
    /// The members whose statements confirmed it (empty when `already`).
    pub members: Vec<u16>,
    /// Members that gave no statement, and why.
    pub missing: Vec<(u16, String)>,
}

/// Asks the restored signer `index` of `wallet` for a challenge, every other member of
/// `roster` for a statement answering it, and hands the statements to the restored signer.
///
/// # Errors
/// [`ConfirmRestoredError`]; the restored signer's refusal (too few statements, a later
/// epoch, a pending transition) comes back as [`ConfirmRestoredError::Restored`].
pub async fn confirm_restored(
    client: &Client,
    roster: &[RosterEntry],
    wallet: GroupKey,
    index: u16,
) -> Result<RestoredConfirmation, ConfirmRestoredError> {
    let restored = roster
        .iter()
        .find(|e| e.index == index)
        .ok_or(ConfirmRestoredError::NotMember { index })?;
    let (challenge, epoch, confirmed) = match client
        .call(restored, &CoordinatorToSigner::EpochChallenge { wallet })
        .await
    {
        Ok(SignerToCoordinator::EpochChallenge {
            challenge,
            epoch,
            confirmed,
        }) => (challenge, epoch, confirmed),
        Ok(_) => return Err(ConfirmRestoredError::Protocol { index }),
        Err(source) => {
            return Err(ConfirmRestoredError::Restored {
                index,
                stage: "gave no challenge",
                source,
            })
        }
    };
    if confirmed {
        return Ok(RestoredConfirmation {
            epoch,
            already: true,
            members: Vec::new(),
            missing: Vec::new(),
        });
    }
    let others: Vec<RosterEntry> = roster
        .iter()
        .filter(|e| e.index != index)
        .cloned()
        .collect();
    let answers = call_all(client, &others, |_| CoordinatorToSigner::EpochStatement {
        wallet,
        challenge,
    })
    .await;
    let mut statements: Vec<SignedStatement> = Vec::new();
    let mut missing = Vec::new();
    for (i, answer) in answers {
        match answer {
            Ok(SignerToCoordinator::EpochStatement(s)) => statements.push(s),
            Ok(_) => missing.push((i, "answered out of protocol".to_string())),
            Err(e) => missing.push((i, crate::error_chain(&e))),
        }
    }
    match client
        .call(
            restored,
            &CoordinatorToSigner::ConfirmEpoch { wallet, statements },
        )
        .await
    {
        Ok(SignerToCoordinator::EpochConfirmed { epoch, members }) => Ok(RestoredConfirmation {
            epoch,
            already: false,
            members,
            missing,
        }),
        Ok(_) => Err(ConfirmRestoredError::Protocol { index }),
        Err(source) => Err(ConfirmRestoredError::Restored {
            index,
            stage: "did not confirm its epoch",
            source,
        }),
    }
}
