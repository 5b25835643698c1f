//! Co-signing a PSBT of a wallet with its signers, as `wallet send`, the `psbt` commands and
//! the console all do it: refused while a key transition is unfinished, then in one round
//! with the commitments kept in the wallet database, or in the interactive rounds.

use std::time::Duration;

use bitcoin::Psbt;

use super::client::Client;
use super::coordinator::{sign_psbt, SignReport};
use super::one_round::{sign_psbt_one_round, OneRoundOptions};
use crate::protocol::cosign::SignError;
use crate::wallet::CkmWallet;

/// The default time to wait for each signer while co-signing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How [`cosign_wallet`] co-signs.
#[must_use]
#[derive(Debug, Clone, Copy)]
pub struct CosignOptions {
    /// One round with preprocessed commitments when possible (default: true).
    pub one_round: bool,
    /// A hedged start for small PSBTs (default: false; see [`OneRoundOptions::hedge`]).
    pub hedge: bool,
}

impl Default for CosignOptions {
    fn default() -> Self {
        CosignOptions {
            one_round: true,
            hedge: false,
        }
    }
}

/// Why [`cosign_wallet`] did not sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CosignError {
    /// A refresh, removal, repair or enrolment is unfinished: the signers may be between
    /// epochs.
    #[error("wallet '{wallet}' has an unfinished {kind} (the signers may be between epochs)")]
    Pending {
        /// The wallet.
        wallet: String,
        /// The kind of transition.
        kind: String,
    },
    /// The signers did not sign.
    #[error("co-signing failed; the PSBT was not changed")]
    Sign(#[from] SignError),
}

/// Co-signs `psbt` with the signers of `w` through `client`; on success `psbt` holds the
/// signatures and the report the finalized transaction.
///
/// # Errors
/// [`CosignError::Pending`] while a key transition is unfinished; [`CosignError::Sign`] when
/// fewer than `t` signers signed (each refusal with its reason), `psbt` then untouched.
pub async fn cosign_wallet(
    client: &Client,
    w: &CkmWallet,
    psbt: &mut Psbt,
    options: CosignOptions,
) -> Result<SignReport, CosignError> {
    if let Some(p) = &w.meta().pending {
        return Err(CosignError::Pending {
            wallet: w.meta().name.clone(),
            kind: p.record.context.kind.to_string(),
        });
    }
    let report = if options.one_round {
        let (meta, mut store) = w.commitments(&client.identity().public());
        sign_psbt_one_round(
            client,
            meta,
            psbt,
            &mut store,
            OneRoundOptions {
                hedge: options.hedge,
                ..OneRoundOptions::default()
            },
        )
        .await?
    } else {
        sign_psbt(client, w.meta(), psbt).await?
    };
    Ok(report)
}
