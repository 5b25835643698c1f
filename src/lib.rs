//! # ckm — Collaborative Key Management for Bitcoin
//!
//! A FROST threshold Taproot wallet: `n` co-signers ("secret servers") run a distributed key
//! generation so that each holds one share and the group key never exists anywhere; any `t` of
//! them co-sign PSBTs for the wallet, and the result on chain is an ordinary single-key
//! Taproot key-path spend (BIP-0340 signature, BIP-0341 sighash, BIP-0086 style HD addresses).
//!
//! The crate is a pure core with a thin I/O shell. In reading order (each module's doc says
//! what it may import; `docs/architecture.md` draws the whole house, and
//! `contrib/layers.py` checks that every arrow points down):
//! - [`message`]: typed, versioned messages between coordinator and signers — what flows;
//! - [`protocol`]: every protocol as a transport-free state machine — certified key
//!   generation (`dkg`), epoch transitions (`lifecycle`), co-signing (`cosign`), one-round
//!   signing and ROAST (`roast`), wallet-wide spending limits (`spend_limits`);
//! - [`psbt`]: the BIP-0174/0370 codec, the signer's checks, the signer's two FROST rounds over
//!   all inputs, the coordinator's aggregation, verification and finalization;
//! - [`recovery`]: the optional timelocked recovery path and its script-path signer;
//! - [`keys`], [`frost`], [`identity`], [`auth`], [`store`]: typed keys and rosters, FROST key
//!   shares with HD derivation and the uncertified DKG rounds, identity keys, request
//!   authentication, encryption at rest;
//! - [`signer`] and [`wallet`]: who keeps what — the secret server's home, records and
//!   handlers; the coordinator's bdk_wallet wallet, its payments and history;
//! - [`chain`]: the wallet's chain sources behind one trait (Electrum, Bitcoin Core RPC);
//! - [`net`], [`ops`]: the signer's flood-proof HTTP server and the coordinator's client and
//!   protocol drivers, TLS; the signer's configuration, transport quotas and metrics;
//! - the `ckm` binary wraps these in a CLI, the signer daemon and the coordinator client.
//!
//! ```
//! use ckm::frost::pedersen::{run_in_memory, DkgParams};
//!
//! let mut rng = rand::thread_rng();
//! let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
//! let group = shares[0].group().clone();
//! assert!(shares.iter().all(|s| s.group() == &group));
//! let (external, _internal) = ckm::wallet::descriptors(&group, bitcoin::Network::Regtest)?;
//! assert!(external.starts_with("tr(["));
//! // Co-signing a wallet PSBT in one process: see `ckm::psbt::sign_in_memory`.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod chain;
pub mod console;
pub mod frost;
pub mod identity;
pub mod idle;
pub mod keys;
pub mod message;
pub mod net;
pub mod ops;
pub mod protocol;
pub mod psbt;
pub mod recovery;
pub mod signer;
pub mod store;
pub mod wallet;

/// An error with every cause in its `source()` chain, joined by `: `.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
