//! Removal of a signer: a refresh among the other members (`refresh.rs` runs its rounds, with
//! `max_signers` the number that remain), after which the removed member's share no longer
//! combines with theirs. What is removal-specific is the shape of its context.

use super::{malformed, same_members, TransitionContext, TransitionError, WalletState};

/// The context of the removal of member `i`: the roster is the current one without `i`, at
/// least the threshold `t` remain, and every remaining member takes part.
pub(super) fn check(
    context: &TransitionContext,
    from: &WalletState,
    i: u16,
    t: usize,
    new_indexes: &[u16],
) -> Result<(), TransitionError> {
    let kind = context.kind;
    let expected = from
        .roster
        .without(i)
        .map_err(|e| malformed(kind, e.to_string()))?;
    if from.roster.get(i).is_none() || !same_members(&context.new_roster, &expected) {
        return Err(malformed(
            kind,
            format!("the roster must be the current one without {i}"),
        ));
    }
    if context.new_roster.entries().len() < t {
        return Err(malformed(
            kind,
            format!("fewer than the threshold ({t}) would remain"),
        ));
    }
    if context.helpers != new_indexes {
        return Err(malformed(kind, "every remaining member takes part"));
    }
    Ok(())
}
