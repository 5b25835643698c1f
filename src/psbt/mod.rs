//! PSBTs: the formats they come in and the co-signing done on them.
//!
//! In reading order:
//! - [`consts`]: the PSBT key types ckm's own codec handles, named as BIP-0174 and BIP-0370
//!   spell them.
//! - [`codec`]: the raw key-value maps read and written byte for byte, the version detected,
//!   the decoding errors.
//! - [`convert`]: version 2 ↔ version 0, so that everything else works on one model
//!   ([`bitcoin::Psbt`]); [`version`] puts codec and conversion behind [`VersionedPsbt`].
//! - [`ur`]: PSBTs as URs for air-gapped transfer.
//! - [`check`]: the signer's checks before it signs.
//! - [`rounds`]: the signer's two FROST rounds.
//! - [`coordinate`]: the coordinator's aggregation and finalization; plus an in-memory driver
//!   ([`sign_in_memory`]) here.
//! - [`inspect`]: a wallet's view of any PSBT.
//!
//! May import `recovery`, `keys`, `frost` and `identity` (lower floors); never `protocol`,
//! `signer`, `wallet`, `net`, `ops` or `cli`.

pub mod check;
pub mod codec;
pub mod consts;
pub mod convert;
pub mod coordinate;
pub mod inspect;
pub mod rounds;
pub mod ur;
pub mod version;

use std::collections::BTreeMap;

use bitcoin::{Psbt, Transaction};
use rand::{CryptoRng, RngCore};

pub use check::{check_psbt, check_psbt_with, CheckError, CheckedPsbt};
pub use coordinate::{CoordinateError, SessionPackages, SigningSession, VerifiedSignatures};
pub use rounds::{commit, commit_with, PreprocessedNonce, SignError, SignerNonces};
pub use version::{PsbtVersion, VersionedPsbt};

use crate::frost::shares::{roster_index, KeyShare};
use crate::recovery::RecoveryPolicy;

/// From this many inputs on, signing, share checks and aggregation split the inputs over two
/// threads (inputs are independent).
pub const PARALLEL_INPUTS: usize = 16;

/// Runs `work` over `0..len`: in two halves on two threads from [`PARALLEL_INPUTS`] items when
/// the machine has two cores or more, else at once on this thread. The parts' results, in
/// order.
pub(crate) fn in_halves<T: Send>(
    len: usize,
    work: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if len < PARALLEL_INPUTS || threads < 2 {
        return vec![work(0..len)];
    }
    let half = len / 2;
    std::thread::scope(|scope| {
        let second = scope.spawn(|| work(half..len));
        let first = work(0..half);
        let second = second
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        vec![first, second]
    })
}

/// Errors of [`sign_in_memory`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InMemoryError {
    /// A signer refused.
    #[error("signer {signer} refused")]
    Signer {
        /// Roster index.
        signer: u16,
        /// The cause.
        #[source]
        source: SignError,
    },
    /// The coordinator failed.
    #[error(transparent)]
    Coordinate(#[from] CoordinateError),
}

/// Co-signs `psbt` with the given shares in one process (both rounds, aggregation,
/// verification, finalization). For tests, benchmarks and documentation.
///
/// # Errors
/// Any signer's refusal or the coordinator's error; `psbt` is untouched on error.
pub fn sign_in_memory<R: RngCore + CryptoRng>(
    psbt: &mut Psbt,
    shares: &[&KeyShare],
    rng: &mut R,
) -> Result<Transaction, InMemoryError> {
    sign_in_memory_with(psbt, shares, None, rng)
}

/// [`sign_in_memory`] for a wallet with a certified recovery path: the coordinator and every
/// signer check the PSBT against `recovery`.
///
/// # Errors
/// Any signer's refusal or the coordinator's error; `psbt` is untouched on error.
pub fn sign_in_memory_with<R: RngCore + CryptoRng>(
    psbt: &mut Psbt,
    shares: &[&KeyShare],
    recovery: Option<&RecoveryPolicy>,
    rng: &mut R,
) -> Result<Transaction, InMemoryError> {
    let group = match shares.first() {
        Some(s) => s.group().clone(),
        None => {
            return Err(CoordinateError::NotEnoughSigners { have: 0, need: 2 }.into());
        }
    };
    let session = SigningSession::with_recovery(psbt, &group, recovery)?;
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for share in shares {
        let (n, c, _) =
            commit_with(psbt, share, recovery, rng).map_err(|source| InMemoryError::Signer {
                signer: roster_index(&share.identifier()),
                source,
            })?;
        commitments.insert(share.identifier(), c);
        nonces.push((*share, n));
    }
    let packages = session.signing_packages(&commitments)?;
    let mut signature_shares = BTreeMap::new();
    for (share, n) in nonces {
        let s = n
            .sign(psbt, share, &packages)
            .map_err(|source| InMemoryError::Signer {
                signer: roster_index(&share.identifier()),
                source,
            })?;
        signature_shares.insert(share.identifier(), s);
    }
    let signatures = session.aggregate(&packages, &signature_shares)?;
    Ok(session.finalize(psbt, &signatures)?)
}
