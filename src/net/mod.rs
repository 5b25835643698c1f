//! The I/O shell around the core: the signer's HTTP server ([`server`]), the coordinator's
//! HTTP client ([`client`]) and the coordinator's protocol drivers ([`coordinator`]) for DKG
//! and PSBT co-signing across signer processes.
//!
//! Every request is a [`crate::message::Versioned`] JSON body signed by the coordinator's
//! identity key (header [`AUTH_HEADER`], bound to the target signer's identity, a fresh nonce
//! and a timestamp); every answer is signed by the signer (header [`RESPONSE_HEADER`]),
//! binding it to the request.
//!
//! Reading order: [`client`], [`server`] (with [`quota`], the counters that enforce the
//! signer's transport quotas, and [`tls`]), then the drivers [`coordinator`] (key generation,
//! two-round co-signing, transitions) and [`one_round`] (one-round signing and ROAST).
//!
//! May import everything below it: `signer`, `wallet`, `ops`, `message`, `protocol`, `psbt`
//! and the lower floors. Never `chain` or `cli`.

pub mod client;
pub mod coordinator;
pub mod cosign;
pub mod one_round;
pub mod quota;
pub mod restored;
pub mod server;
pub mod tls;
pub mod transitions;

use bitcoin::hashes::{sha256, Hash, HashEngine};

use crate::identity::IdentityPublic;

/// Request authentication header.
pub const AUTH_HEADER: &str = "x-ckm-auth";
/// Response signature header.
pub const RESPONSE_HEADER: &str = "x-ckm-signer-signature";
/// The one protocol endpoint.
pub const MESSAGE_PATH: &str = "/v1/message";
/// Unauthenticated health check (`GET`): up, with the store unlocked.
pub const HEALTH_PATH: &str = "/healthz";
/// Prometheus metrics (`GET`), on the metrics listener only.
pub const METRICS_PATH: &str = "/metrics";
/// The TLS server's identity-signed statement of its certificate (`GET`).
pub const TLS_STATEMENT_PATH: &str = "/v1/tls-statement";
/// Header of a TLS signer's plain-HTTP answer to a plain-HTTP request: the scheme to use.
pub const SCHEME_HEADER: &str = "x-ckm-scheme";
/// Most inputs a PSBT may have for every signer to accept it at any threshold up to
/// [`MAX_THRESHOLD`] ([`MAX_BODY`] is sized for it).
///
/// A standard transaction weighs at most 400 000 WU and a key-path Taproot input at least
/// 230 WU, so standard spends have at most 1 739 inputs; 1 000 covers consolidations that
/// wallets make in practice, and larger ones can be split.
pub const MAX_INPUTS: usize = 1_000;
/// Threshold up to which [`MAX_INPUTS`] inputs fit in one message: the largest group in the
/// test suite is 15-of-20.
pub const MAX_THRESHOLD: usize = 20;

/// Upper bound on the JSON of one signer's commitment inside a signing package: the
/// identifier (64 hex characters, quoted, as a map key), the frost header and two 33-byte
/// points in hex, with punctuation. Measured at 294 bytes; checked by a test.
const COMMITMENT_JSON: usize = 320;
/// Upper bound on the JSON of one signing package without its commitments: the frost
/// header, the 32-byte sighash in hex, field names and punctuation. Measured at 170 bytes;
/// checked by a test.
const PACKAGE_JSON: usize = 192;
/// Upper bound on one input of a ckm PSBT in base64 (unsigned-transaction input,
/// `witness_utxo`, `tap_internal_key`, one `tap_key_origins` entry, `sighash_type`),
/// with room for one output per input. Measured at 408 bytes; checked by a test.
const PSBT_INPUT_BASE64: usize = 512;
/// Room for the envelope of any message: version, variant, session, wallet reference.
const ENVELOPE: usize = 64 * 1024;
/// Most spends in the window of a wallet-wide limit that a signer's statement may list for
/// [`MAX_INPUTS`] inputs at [`MAX_THRESHOLD`] to still fit (see
/// [`crate::protocol::spend_limits::Statement`]); more spends leave room for fewer inputs.
pub const MAX_WINDOW_SPENDS: usize = 300;
/// Most outpoints all the spends of one statement may list together (each spend names the
/// outpoints it consumes, protocol version 3) for [`MAX_INPUTS`] inputs at
/// [`MAX_THRESHOLD`] to still fit; a window with more leaves room for fewer inputs.
pub const MAX_WINDOW_INPUTS: usize = 500;
/// Upper bound on the JSON of one spend in a statement (txid, amount, state, the `inputs`
/// field without its outpoints). Measured at 136 bytes; checked by a test.
const SPEND_JSON: usize = 144;
/// Upper bound on the JSON of one outpoint in a spend's inputs (`"txid:vout",`). Measured at
/// 78 bytes; checked by a test.
const OUTPOINT_JSON: usize = 80;
/// Upper bound on a statement without its spends. Measured at about 400 bytes.
const STATEMENT_JSON: usize = 1024;

/// Largest request or response body a signer or coordinator accepts: 8 MiB.
///
/// Sized to the largest legitimate message, which is round 2 of signing
/// ([`crate::message::CoordinatorToSigner::SignShare`]) for a PSBT of [`MAX_INPUTS`] inputs
/// at threshold [`MAX_THRESHOLD`]: one signing package per input, each carrying the
/// commitments of `t` signers:
/// `1 000 × (192 + 20 × 320) = 6 592 000` bytes (6.05 MB measured), plus, for a wallet with
/// a wallet-wide limit, one statement per chosen signer listing up to [`MAX_WINDOW_SPENDS`]
/// spends that consume up to [`MAX_WINDOW_INPUTS`] outpoints
/// (`20 × (1 024 + 300 × 144 + 500 × 80) = 1 684 480` bytes), plus the envelope: 8.34 MB,
/// under 8 MiB. Round 1's PSBT (`1 000 × 512` bytes; 0.41 MB measured) and every
/// answer are far smaller, and so is the largest key-generation message (the round-1
/// broadcasts of a 255-of-255 group, 4.58 MB measured). A test encodes each of these
/// messages and checks they fit.
///
/// The coordinator refuses to send anything larger
/// ([`client::CallError::RequestTooLarge`]), and with this many inputs at a higher
/// threshold the spend must be split.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The computed bound on the largest legitimate message (see [`MAX_BODY`]): 8 342 016 bytes.
pub const LARGEST_MESSAGE: usize = ENVELOPE
    + MAX_INPUTS * (PACKAGE_JSON + MAX_THRESHOLD * COMMITMENT_JSON)
    + MAX_THRESHOLD
        * (STATEMENT_JSON + MAX_WINDOW_SPENDS * SPEND_JSON + MAX_WINDOW_INPUTS * OUTPOINT_JSON);

const _: () = assert!(LARGEST_MESSAGE <= MAX_BODY);
const _: () = assert!(ENVELOPE + MAX_INPUTS * PSBT_INPUT_BASE64 <= MAX_BODY);

/// The path string a request signs: the endpoint bound to the target signer, so a request
/// captured on its way to one signer cannot be replayed to another.
pub fn signed_path(signer: &IdentityPublic) -> String {
    format!("{MESSAGE_PATH}#{signer}")
}

/// What a signer signs in its answer: the request's signature and the response body.
pub fn response_digest(request_signature: &[u8; 64], body: &[u8]) -> [u8; 32] {
    let mut engine = sha256::Hash::engine();
    engine.input(request_signature);
    engine.input(body);
    sha256::Hash::from_engine(engine).to_byte_array()
}

#[cfg(test)]
mod tests {
    //! The largest legitimate messages, encoded for real, fit [`MAX_BODY`]; the per-item
    //! bounds [`MAX_BODY`] is computed from hold.

    use std::collections::BTreeMap;
    use std::str::FromStr;

    use bitcoin::bip32::{DerivationPath, Fingerprint};
    use bitcoin::hashes::Hash;
    use bitcoin::psbt::{Input, Output, Psbt};
    use bitcoin::secp256k1::{Keypair, Secp256k1};
    use bitcoin::transaction::Version;
    use bitcoin::{
        absolute, Amount, OutPoint, ScriptBuf, Sequence, TapSighashType, Transaction, TxIn, TxOut,
        Txid, Witness,
    };
    use frost_secp256k1_tr as frost;
    use rand::SeedableRng;

    use super::*;
    use crate::frost::identifier;
    use crate::frost::pedersen::{DkgParams, DkgRound1};
    use crate::identity::IdentityKey;
    use crate::keys::GroupKey;
    use crate::message::{encode, CoordinatorToSigner, SessionId, SignerToCoordinator, WalletRef};
    use crate::protocol::dkg::Round1Request;
    use crate::protocol::spend_limits::{Receipt, SpendEntry, SpendState, Statement};

    fn group_key() -> GroupKey {
        // The secp256k1 generator: any valid point does.
        "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
            .parse()
            .unwrap()
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(0x51_7a_e5)
    }

    fn commitments(t: u16) -> BTreeMap<frost::Identifier, frost::round1::SigningCommitments> {
        let mut rng = rng();
        let share = frost::keys::SigningShare::deserialize(&[7u8; 32]).unwrap();
        (1..=t)
            .map(|i| {
                let (_, c) = frost::round1::commit(&share, &mut rng);
                (identifier(i).unwrap(), c)
            })
            .collect()
    }

    #[test]
    fn signing_round_2_at_the_limit_fits() {
        let t = u16::try_from(MAX_THRESHOLD).unwrap();
        let one = frost::SigningPackage::new(commitments(1), &[0xab; 32]);
        let full = frost::SigningPackage::new(commitments(t), &[0xab; 32]);
        let one_len = serde_json::to_vec(&one).unwrap().len();
        let full_len = serde_json::to_vec(&full).unwrap().len();
        let per_commitment = (full_len - one_len) / (MAX_THRESHOLD - 1);
        let package = one_len - per_commitment;
        eprintln!("package {package} bytes + {per_commitment} per commitment");
        assert!(per_commitment <= COMMITMENT_JSON, "{per_commitment}");
        assert!(package <= PACKAGE_JSON, "{package}");

        let session = SessionId([0xcd; 16]);
        let mut message = CoordinatorToSigner::SignShare {
            session,
            packages: vec![full; MAX_INPUTS],
            statements: BTreeMap::new(),
        };
        let len = encode(&message).len();
        eprintln!("SignShare of {MAX_INPUTS} inputs at t = {MAX_THRESHOLD}: {len} bytes");
        assert!(len <= MAX_BODY, "{len}");

        // With a wallet-wide limit: one statement per chosen signer, each listing up to
        // MAX_WINDOW_SPENDS spends that consume MAX_WINDOW_INPUTS outpoints in all.
        let key = IdentityKey::generate(&mut rng());
        let outpoint = |i: usize| {
            bitcoin::OutPoint::new(Txid::from_byte_array([(i % 251) as u8; 32]), u32::MAX)
        };
        let spends: Vec<SpendEntry> = (0..MAX_WINDOW_SPENDS)
            .map(|i| SpendEntry {
                txid: Txid::from_byte_array([(i % 251) as u8; 32]),
                outflow_sats: 2_100_000_000_000_000,
                state: SpendState::Signed,
                inputs: if i < MAX_WINDOW_INPUTS - MAX_WINDOW_SPENDS {
                    vec![outpoint(i), outpoint(i + 1)]
                } else {
                    vec![outpoint(i)]
                },
            })
            .collect();
        assert_eq!(
            spends.iter().map(|s| s.inputs.len()).sum::<usize>(),
            MAX_WINDOW_INPUTS
        );
        let statement = |index| {
            Statement::sign(
                &key,
                group_key(),
                session,
                index,
                u64::MAX,
                u64::MAX,
                spends.clone(),
            )
        };
        let last = spends.last().unwrap();
        let one_spend = serde_json::to_vec(last).unwrap().len() + 1;
        let one_outpoint = serde_json::to_vec(&last.inputs[0]).unwrap().len() + 1;
        eprintln!("statement spend entry {one_spend} bytes with one outpoint of {one_outpoint}");
        assert!(one_outpoint <= OUTPOINT_JSON, "{one_outpoint}");
        assert!(one_spend <= SPEND_JSON + OUTPOINT_JSON, "{one_spend}");
        if let CoordinatorToSigner::SignShare { statements, .. } = &mut message {
            for index in 1..=t {
                statements.insert(index, statement(index));
            }
        }
        let len = encode(&message).len();
        eprintln!(
            "SignShare of {MAX_INPUTS} inputs at t = {MAX_THRESHOLD} with statements of \
             {MAX_WINDOW_SPENDS} spends: {len} bytes"
        );
        assert!(len <= MAX_BODY, "{len}");

        // The answer to round 1: one commitment per input and a receipt.
        let commitments = SignerToCoordinator::SignCommitments {
            commitments: vec![*commitments(1).values().next().unwrap(); MAX_INPUTS],
            receipt: Receipt::sign(&key, group_key(), session, 1, Txid::all_zeros(), 1),
            statements_required: true,
        };
        assert!(encode(&commitments).len() <= MAX_BODY / 8);
    }

    /// A PSBT laid out as ckm's wallet writes it: every input with `witness_utxo`,
    /// `tap_internal_key`, one `tap_key_origins` entry at m/1/i and a sighash type; one
    /// change-like output per input with its own origin.
    fn wallet_like_psbt(inputs: usize) -> Psbt {
        let secp = Secp256k1::new();
        let key = Keypair::from_seckey_slice(&secp, &[3u8; 32]).unwrap();
        let (xonly, _) = key.x_only_public_key();
        let spk = ScriptBuf::new_p2tr(&secp, xonly, None);
        let n = u32::try_from(inputs).unwrap();
        let tx = Transaction {
            version: Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: (0..n)
                .map(|i| TxIn {
                    previous_output: OutPoint::new(Txid::from_byte_array([i as u8; 32]), i),
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: (0..n)
                .map(|_| TxOut {
                    value: Amount::from_sat(2_100_000_000_000_000),
                    script_pubkey: spk.clone(),
                })
                .collect(),
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
        let origin = |i: u32| {
            let path = DerivationPath::from_str(&format!("m/1/{}", 2_000_000_000 + i)).unwrap();
            BTreeMap::from([(xonly, (vec![], (Fingerprint::from([0xaa; 4]), path)))])
        };
        for (i, input) in (0..n).zip(psbt.inputs.iter_mut()) {
            *input = Input {
                witness_utxo: Some(TxOut {
                    value: Amount::from_sat(2_100_000_000_000_000),
                    script_pubkey: spk.clone(),
                }),
                tap_internal_key: Some(xonly),
                tap_key_origins: origin(i),
                sighash_type: Some(TapSighashType::All.into()),
                ..Input::default()
            };
        }
        for (i, output) in (0..n).zip(psbt.outputs.iter_mut()) {
            *output = Output {
                tap_internal_key: Some(xonly),
                tap_key_origins: origin(i),
                ..Output::default()
            };
        }
        psbt
    }

    #[test]
    fn signing_round_1_at_the_limit_fits() {
        let one = wallet_like_psbt(1).to_string().len();
        let two = wallet_like_psbt(2).to_string().len();
        eprintln!("PSBT input and output: {} base64 bytes", two - one);
        assert!(two - one <= PSBT_INPUT_BASE64, "{}", two - one);
        let psbt = wallet_like_psbt(MAX_INPUTS).to_string();
        assert!(psbt.len() <= MAX_INPUTS * PSBT_INPUT_BASE64);
        let message = CoordinatorToSigner::SignCommit {
            session: SessionId([0xcd; 16]),
            wallet: WalletRef {
                name: "w".repeat(200),
                group_key: group_key(),
                epoch: u64::MAX,
            },
            psbt,
        };
        let len = encode(&message).len();
        eprintln!("SignCommit of {MAX_INPUTS} inputs: {len} bytes");
        assert!(len <= MAX_BODY, "{len}");
    }

    #[test]
    fn largest_key_generation_fits() {
        let n = DkgParams::MAX_SIGNERS;
        let params = DkgParams::new(n, n).unwrap();
        let (_, broadcast) =
            DkgRound1::start(identifier(1).unwrap(), params, [9; 32], &mut rng()).unwrap();
        let message = CoordinatorToSigner::DkgRound1(Round1Request {
            session: SessionId([0xcd; 16]),
            broadcasts: (1..=n).map(|i| (i, broadcast.clone())).collect(),
        });
        let len = encode(&message).len();
        eprintln!("DkgRound1 of {n}-of-{n}: {len} bytes");
        assert!(len <= MAX_BODY, "{len}");
    }
}
