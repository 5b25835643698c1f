//! The protocols between the coordinator and the signers, one file each, every one a
//! transport-free state machine: a participant half (what a signer checks and answers) and a
//! coordinator half (what the coordinator sends next and how it checks the answers). They take
//! messages and randomness and return messages; the signer daemon, the coordinator's network
//! driver and the in-memory test harness all drive the same code. None of them draws its own
//! randomness: the caller hands each step an RNG, so a test can replay a run from a seed.
//!
//! - [`dkg`]: certified distributed key generation (approved peers, a transcript over the
//!   whole roster, certificates from every signer before anyone stores a share).
//! - [`cosign`]: the coordinator's co-signing state machine (who is asked, who is excluded, when
//!   to retry).
//! - [`lifecycle`]: epoch transitions — refresh, remove a signer, repair a lost share, enrol
//!   a new signer — certified and committed in two phases.
//! - [`roast`]: one-round signing with preprocessed nonces, and ROAST's concurrent sessions
//!   that complete whatever `n − t` faulty signers do; [`patience`]: when a member that
//!   answered may join another session.
//! - [`spend_limits`]: reservations, receipts and signed statements that make spending limits hold
//!   for the whole wallet whichever `t` signers sign.
//!
//! May import `psbt`, `recovery`, `keys`, `auth`, `identity`, `store`, `frost` (lower floors).
//! Never `message` (which is built from these types), `signer`, `wallet`, `chain`, `net`,
//! `ops` or `cli`.

pub mod cosign;
pub mod dkg;
pub mod lifecycle;
pub mod patience;
pub mod roast;
pub mod spend_limits;

use serde::{Deserialize, Serialize};

/// A 16-byte random session identifier, hex in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(#[serde(with = "hex::serde")] pub [u8; 16]);

impl SessionId {
    /// A fresh random session id.
    pub fn random<R: rand::RngCore>(rng: &mut R) -> Self {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        SessionId(b)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
