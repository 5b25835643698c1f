//! Signing the recovery path of a PSBT with a recovery key (BIP-0371 script-path fields), and
//! finalizing PSBTs with miniscript. Any BIP-0371 signer (Bitcoin Core's
//! `descriptorprocesspsbt`, a hardware wallet) can sign the same PSBT; this is for users who
//! have no other wallet.
//!
//! What is checked before signing: the recovery key re-derives to the key the PSBT names at
//! the origin path it gives, the script leaf is in the input's `tap_scripts` and its control
//! block commits to the output key the input spends, and the sighash type is
//! SIGHASH_DEFAULT or SIGHASH_ALL. The BIP-0341 script-path sighash is computed here.

use std::fmt;
use std::str::FromStr;

use bitcoin::bip32::{DerivationPath, Fingerprint, Xpriv};
use bitcoin::hashes::Hash;
use bitcoin::key::Keypair;
use bitcoin::secp256k1::Message;
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::taproot::{self, TapLeafHash};
use bitcoin::{Psbt, TapSighashType, Transaction, TxOut, XOnlyPublicKey};
use miniscript::descriptor::{DescriptorSecretKey, Wildcard};
use miniscript::psbt::PsbtExt;
use rand::{CryptoRng, RngCore};

use super::RecoveryKey;
use crate::frost::shares::secp;

/// Why a recovery signature was not made. Inputs are named by index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignRecoveryError {
    /// The key file does not hold an extended private key.
    #[error("the recovery key file does not hold an extended private key: {0}")]
    KeyFormat(&'static str),
    /// An input lacks the output it spends.
    #[error("input {input}: missing witness_utxo")]
    MissingUtxo {
        /// Input index.
        input: usize,
    },
    /// Only SIGHASH_DEFAULT and SIGHASH_ALL are signed.
    #[error(
        "input {input}: sighash type {sighash} is not signed (only SIGHASH_DEFAULT or SIGHASH_ALL)"
    )]
    SighashType {
        /// Input index.
        input: usize,
        /// The requested type.
        sighash: String,
    },
    /// The PSBT names our origin but another key.
    #[error("input {input}: the key at {origin} is not the one the PSBT names there")]
    KeyMismatch {
        /// Input index.
        input: usize,
        /// The origin (fingerprint/path).
        origin: String,
    },
    /// The leaf our key signs is not in `tap_scripts`.
    #[error("input {input}: the script leaf the recovery key signs is not in tap_scripts")]
    UnknownLeaf {
        /// Input index.
        input: usize,
    },
    /// The leaf's control block does not commit to the output spent.
    #[error("input {input}: the recovery script is not committed to by the output it spends")]
    NotCommitted {
        /// Input index.
        input: usize,
    },
    /// Derivation failed.
    #[error("input {input}: cannot derive the recovery key")]
    Derive {
        /// Input index.
        input: usize,
        /// The cause.
        #[source]
        source: bitcoin::bip32::Error,
    },
    /// The sighash could not be computed.
    #[error("input {input}: cannot compute the BIP-0341 script-path sighash")]
    Sighash {
        /// Input index.
        input: usize,
        /// The cause.
        #[source]
        source: bitcoin::sighash::TaprootError,
    },
    /// The key signs nothing in this PSBT.
    #[error("the recovery key {key} signs no input of this PSBT (is it the wallet's recovery key, and does the PSBT spend through the recovery path?)")]
    NothingToSign {
        /// The key's public form.
        key: String,
    },
}

/// A recovery private key: an extended private key with its origin (`[fp/path]tprv…`), or a
/// master key (`tprv…` at depth 0). Redacted `Debug`; its secret is erased on drop.
pub struct RecoverySecret {
    fingerprint: Fingerprint,
    path: DerivationPath,
    xprv: Xpriv,
}

impl fmt::Debug for RecoverySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RecoverySecret([{}/{}] <redacted>)",
            self.fingerprint, self.path
        )
    }
}

impl Drop for RecoverySecret {
    fn drop(&mut self) {
        self.xprv.private_key.non_secure_erase();
        self.xprv.chain_code = bitcoin::bip32::ChainCode::from([0u8; 32]);
    }
}

impl FromStr for RecoverySecret {
    type Err = SignRecoveryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = DescriptorSecretKey::from_str(s.trim()).map_err(|_| {
            SignRecoveryError::KeyFormat("expected tprv…/xprv… or [fingerprint/path]tprv…")
        })?;
        let DescriptorSecretKey::XPrv(x) = key else {
            return Err(SignRecoveryError::KeyFormat(
                "a single private key is not enough: give the extended private key",
            ));
        };
        if !x.derivation_path.is_empty() || x.wildcard != Wildcard::None {
            return Err(SignRecoveryError::KeyFormat(
                "give the key without derivation steps after it",
            ));
        }
        let (fingerprint, path) = match x.origin {
            Some((fp, path)) => (fp, path),
            None if x.xkey.depth == 0 => (x.xkey.fingerprint(secp()), DerivationPath::master()),
            None => {
                return Err(SignRecoveryError::KeyFormat(
                    "a key below the master needs its origin: [fingerprint/path]tprv…",
                ))
            }
        };
        if usize::from(x.xkey.depth) != path.len() {
            return Err(SignRecoveryError::KeyFormat(
                "its origin path does not have as many steps as the key's depth",
            ));
        }
        Ok(RecoverySecret {
            fingerprint,
            path,
            xprv: x.xkey,
        })
    }
}

impl RecoverySecret {
    /// The extended public key at `origin_path` below this key (e.g. `86'/1'/0'` below a
    /// master key), as it goes into `ckm wallet create --recovery-key`.
    ///
    /// # Errors
    /// A derivation error.
    pub fn public_at(
        &self,
        origin_path: &DerivationPath,
    ) -> Result<RecoveryKey, bitcoin::bip32::Error> {
        let steps: &[bitcoin::bip32::ChildNumber] = origin_path.as_ref();
        let own: &[bitcoin::bip32::ChildNumber] = self.path.as_ref();
        let rest = steps
            .strip_prefix(own)
            .ok_or(bitcoin::bip32::Error::CannotDeriveFromHardenedKey)?;
        let child = self
            .xprv
            .derive_priv(secp(), &DerivationPath::from(rest.to_vec()))?;
        Ok(RecoveryKey {
            fingerprint: self.fingerprint,
            path: origin_path.clone(),
            xpub: bitcoin::bip32::Xpub::from_priv(secp(), &child),
        })
    }

    /// The key pair at a full origin path, when this key can derive it.
    fn keypair_at(
        &self,
        fingerprint: Fingerprint,
        path: &DerivationPath,
    ) -> Option<Result<Keypair, bitcoin::bip32::Error>> {
        if fingerprint != self.fingerprint {
            return None;
        }
        let steps: &[bitcoin::bip32::ChildNumber] = path.as_ref();
        let own: &[bitcoin::bip32::ChildNumber] = self.path.as_ref();
        let rest = steps.strip_prefix(own)?;
        Some(
            self.xprv
                .derive_priv(secp(), &DerivationPath::from(rest.to_vec()))
                .map(|k| k.to_keypair(secp())),
        )
    }

    /// Mainnet or test networks.
    pub fn network_kind(&self) -> bitcoin::NetworkKind {
        self.xprv.network
    }

    fn describe(&self) -> String {
        format!("[{}/{}]", self.fingerprint, self.path)
    }
}

/// What [`sign_recovery`] signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySigned {
    /// Inputs that received a signature.
    pub inputs: Vec<usize>,
    /// Signatures added (one per input and leaf).
    pub signatures: usize,
}

fn output_key(utxo: &TxOut) -> Option<XOnlyPublicKey> {
    let bytes = utxo.script_pubkey.as_bytes();
    if !utxo.script_pubkey.is_p2tr() {
        return None;
    }
    XOnlyPublicKey::from_slice(bytes.get(2..34)?).ok()
}

/// Adds this key's script-path signatures (`tap_script_sigs`) to every input whose
/// `tap_key_origins` name a key it derives under a script leaf. The PSBT is changed only if
/// every such input could be signed.
///
/// # Errors
/// [`SignRecoveryError`] naming the input; [`SignRecoveryError::NothingToSign`] when the key
/// signs nothing.
pub fn sign_recovery<R: RngCore + CryptoRng>(
    psbt: &mut Psbt,
    secret: &RecoverySecret,
    rng: &mut R,
) -> Result<RecoverySigned, SignRecoveryError> {
    let mut prevouts = Vec::with_capacity(psbt.inputs.len());
    for (input, i) in psbt.inputs.iter().enumerate() {
        prevouts.push(
            i.witness_utxo
                .clone()
                .ok_or(SignRecoveryError::MissingUtxo { input })?,
        );
    }
    let mut signed = psbt.clone();
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    let mut report = RecoverySigned {
        inputs: Vec::new(),
        signatures: 0,
    };
    for (index, input) in signed.inputs.iter_mut().enumerate() {
        let mut new_sigs = Vec::new();
        for (xonly, (leaves, (fingerprint, path))) in &input.tap_key_origins {
            if leaves.is_empty() {
                continue;
            }
            let Some(keypair) = secret.keypair_at(*fingerprint, path) else {
                continue;
            };
            let keypair = keypair.map_err(|source| SignRecoveryError::Derive {
                input: index,
                source,
            })?;
            if keypair.x_only_public_key().0 != *xonly {
                return Err(SignRecoveryError::KeyMismatch {
                    input: index,
                    origin: format!("[{fingerprint}/{path}]"),
                });
            }
            let sighash_type = match input.sighash_type {
                None => TapSighashType::Default,
                Some(t) => match t.taproot_hash_ty() {
                    Ok(ty @ (TapSighashType::Default | TapSighashType::All)) => ty,
                    _ => {
                        return Err(SignRecoveryError::SighashType {
                            input: index,
                            sighash: t.to_string(),
                        })
                    }
                },
            };
            let spent_key = prevouts
                .get(index)
                .and_then(output_key)
                .ok_or(SignRecoveryError::NotCommitted { input: index })?;
            for leaf in leaves {
                let (control, script) = input
                    .tap_scripts
                    .iter()
                    .find(|(_, (script, version))| {
                        TapLeafHash::from_script(script, *version) == *leaf
                    })
                    .map(|(cb, (script, _))| (cb, script))
                    .ok_or(SignRecoveryError::UnknownLeaf { input: index })?;
                if !control.verify_taproot_commitment(secp(), spent_key, script) {
                    return Err(SignRecoveryError::NotCommitted { input: index });
                }
                let sighash = cache
                    .taproot_script_spend_signature_hash(
                        index,
                        &Prevouts::All(&prevouts),
                        *leaf,
                        sighash_type,
                    )
                    .map_err(|source| SignRecoveryError::Sighash {
                        input: index,
                        source,
                    })?;
                let message = Message::from_digest(sighash.to_byte_array());
                let signature = secp().sign_schnorr_with_rng(&message, &keypair, rng);
                new_sigs.push((
                    (*xonly, *leaf),
                    taproot::Signature {
                        signature,
                        sighash_type,
                    },
                ));
            }
        }
        if !new_sigs.is_empty() {
            report.inputs.push(index);
            report.signatures += new_sigs.len();
            input.tap_script_sigs.extend(new_sigs);
        }
    }
    if report.signatures == 0 {
        return Err(SignRecoveryError::NothingToSign {
            key: secret.describe(),
        });
    }
    *psbt = signed;
    Ok(report)
}

/// Why a PSBT could not be finalized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinalizeError {
    /// miniscript's finalizer refused some inputs.
    #[error("the PSBT cannot be finalized: {}", .0.join("; "))]
    Incomplete(Vec<String>),
    /// The transaction could not be extracted.
    #[error("cannot extract the transaction: {0}")]
    Extract(String),
}

/// Finalizes every input with miniscript's finalizer (key path when a key-path signature is
/// present, otherwise the smallest satisfiable script leaf; signatures and timelocks are
/// checked by its interpreter) and extracts the transaction. The PSBT is changed only on
/// success.
///
/// # Errors
/// [`FinalizeError`] listing the inputs that cannot be satisfied yet.
pub fn finalize(psbt: &mut Psbt) -> Result<Transaction, FinalizeError> {
    let mut done = psbt.clone();
    done.finalize_mut(secp()).map_err(|errors| {
        FinalizeError::Incomplete(errors.iter().map(|e| e.to_string()).collect())
    })?;
    let tx = done
        .clone()
        .extract_tx()
        .map_err(|e| FinalizeError::Extract(e.to_string()))?;
    *psbt = done;
    Ok(tx)
}
