//! The coordinator's wallet as a public record, and rebuilding a lost coordinator database.
//!
//! [`to_envelope`] writes a wallet's public side as a Gordian Envelope (binary CBOR, or a
//! `ur:envelope/…` text): name, network, descriptors, threshold, epoch, fingerprint, the live
//! roster and the certified history (key generation and every transition). Nothing in it is
//! secret. [`from_envelope`] reads one back and re-checks the history offline.
//!
//! [`recover`] rebuilds wallets from what signers answer to
//! [`crate::message::CoordinatorToSigner::WalletRecords`]: each record's history is verified
//! offline, the answering signer must be the certified member at the index it claims, every
//! signer that holds a wallet must give the same history, and at least the wallet's threshold
//! of them must answer.

use std::collections::BTreeMap;
use std::fmt;

use bc_envelope::prelude::*;
use bc_envelope::Envelope;

use super::{WalletMeta, WalletVerifyError};
use crate::identity::IdentityPublic;
use crate::keys::{GroupKey, Roster, RosterEntry};
use crate::message::WalletRecord;
use crate::protocol::lifecycle::History;

/// The `isA` of a wallet record.
pub const WALLET_TYPE: &str = "ckm-wallet";
/// The format version of a wallet record.
pub const WALLET_VERSION: u64 = 1;
/// The UR type of the text form.
pub const UR_TYPE: &str = "envelope";

const VERSION: &str = "version";
const NETWORK: &str = "network";
const EXTERNAL: &str = "external";
const INTERNAL: &str = "internal";
const THRESHOLD: &str = "threshold";
const EPOCH: &str = "epoch";
const FINGERPRINT: &str = "fingerprint";
const ROSTER: &str = "roster";
const HISTORY: &str = "history";

/// Why a wallet record cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The wallet predates certified key generation.
    #[error("wallet {0} has no certified key generation record (made by an older ckm); it cannot be exported as a public record")]
    Uncertified(String),
    /// Not a readable envelope or UR.
    #[error("not a ckm wallet record: {0}")]
    Unreadable(String),
    /// The record is malformed.
    #[error("the wallet record is malformed: {0}")]
    Malformed(String),
    /// The record does not check out.
    #[error("the wallet record does not check out")]
    Verify(#[from] WalletVerifyError),
    /// The recorded descriptors are not the certified group's.
    #[error(
        "the recorded {which} descriptor is not the certified group's ({recorded} vs {certified})"
    )]
    Descriptor {
        /// Which keychain.
        which: &'static str,
        /// As recorded.
        recorded: String,
        /// As derived from the certified group.
        certified: String,
    },
    /// A descriptor could not be built.
    #[error(transparent)]
    Wallet(#[from] super::WalletError),
}

fn malformed(what: &str, e: impl fmt::Display) -> RecordError {
    RecordError::Malformed(format!("{what}: {e}"))
}

/// The wallet's public record as an envelope.
///
/// # Errors
/// An uncertified wallet.
pub fn to_envelope(meta: &WalletMeta) -> Result<Envelope, RecordError> {
    let history = meta
        .history()
        .ok_or_else(|| RecordError::Uncertified(meta.name.clone()))?;
    let (external, internal) = meta.descriptors()?;
    let mut e = Envelope::new(meta.name.as_str())
        .add_assertion(known_values::IS_A, WALLET_TYPE)
        .add_assertion(VERSION, WALLET_VERSION)
        .add_assertion(NETWORK, meta.network.to_string())
        .add_assertion(EXTERNAL, external)
        .add_assertion(INTERNAL, internal)
        .add_assertion(THRESHOLD, u64::from(meta.group.threshold()))
        .add_assertion(EPOCH, meta.epoch)
        .add_assertion(ROSTER, json(&meta.roster)?)
        .add_assertion(HISTORY, json(&history)?);
    if let Some(f) = meta.fingerprint() {
        e = e.add_assertion(FINGERPRINT, f.to_string());
    }
    Ok(e)
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, RecordError> {
    serde_json::to_string(value).map_err(|e| malformed("encoding", e))
}

/// The record as tagged CBOR (the `envelope` export format).
///
/// # Errors
/// See [`to_envelope`].
pub fn to_cbor(meta: &WalletMeta) -> Result<Vec<u8>, RecordError> {
    Ok(to_envelope(meta)?.tagged_cbor().to_cbor_data())
}

/// The record as a `ur:envelope/…` text (the `ur` export format).
///
/// # Errors
/// See [`to_envelope`].
pub fn to_ur(meta: &WalletMeta) -> Result<String, RecordError> {
    let ur = bc_ur::UR::new(UR_TYPE, to_envelope(meta)?.untagged_cbor())
        .map_err(|e| malformed("UR", e))?;
    Ok(ur.string())
}

/// Reads a record written by [`to_cbor`] or [`to_ur`] (recognised by its `ur:` prefix) and
/// checks it: the history verifies offline, the roster names the certified members, and the
/// recorded descriptors are the certified group's. The wallet gets no Electrum server.
///
/// # Errors
/// [`RecordError`] naming the problem.
pub fn from_bytes(bytes: &[u8]) -> Result<WalletMeta, RecordError> {
    let envelope = match std::str::from_utf8(bytes)
        .ok()
        .map(str::trim)
        .filter(|t| t.to_ascii_lowercase().starts_with("ur:"))
    {
        Some(text) => {
            let ur = bc_ur::UR::from_ur_string(text.to_ascii_lowercase())
                .map_err(|e| RecordError::Unreadable(e.to_string()))?;
            if ur.ur_type_str() != UR_TYPE {
                return Err(RecordError::Unreadable(format!(
                    "a ur:{}, not a ur:{UR_TYPE}",
                    ur.ur_type_str()
                )));
            }
            Envelope::from_untagged_cbor(ur.cbor())
        }
        None => Envelope::try_from_cbor_data(bytes.to_vec()),
    }
    .map_err(|e| RecordError::Unreadable(e.to_string()))?;
    from_envelope(&envelope)
}

/// Reads and checks a record (see [`from_bytes`]).
///
/// # Errors
/// [`RecordError`] naming the problem.
pub fn from_envelope(e: &Envelope) -> Result<WalletMeta, RecordError> {
    let is_a: String = e
        .extract_object_for_predicate(known_values::IS_A)
        .map_err(|err| malformed("isA", err))?;
    if is_a != WALLET_TYPE {
        return Err(RecordError::Unreadable(format!(
            "it is a {is_a:?}, not a {WALLET_TYPE:?}"
        )));
    }
    let version: u64 = e
        .extract_object_for_predicate(VERSION)
        .map_err(|err| malformed(VERSION, err))?;
    if version != WALLET_VERSION {
        return Err(RecordError::Malformed(format!(
            "format version {version}; this build reads version {WALLET_VERSION}"
        )));
    }
    let text = |p: &str| -> Result<String, RecordError> {
        e.extract_object_for_predicate(p)
            .map_err(|err| malformed(p, err))
    };
    let history: History =
        serde_json::from_str(&text(HISTORY)?).map_err(|err| malformed(HISTORY, err))?;
    let roster: Roster =
        serde_json::from_str(&text(ROSTER)?).map_err(|err| malformed(ROSTER, err))?;
    let state = history
        .verify()
        .map_err(|err| RecordError::Verify(WalletVerifyError::History(err.to_string())))?;
    let meta = WalletMeta {
        name: history.keygen.context.wallet.clone(),
        network: history.keygen.context.network,
        group: state.group,
        roster,
        electrum: None,
        keygen: Some(history.keygen),
        epoch: state.epoch,
        transitions: history.transitions,
        pending: None,
    };
    meta.verify()?;
    let (external, internal) = meta.descriptors()?;
    for (which, recorded, certified) in [
        ("external", text(EXTERNAL)?, external),
        ("internal", text(INTERNAL)?, internal),
    ] {
        if recorded != certified {
            return Err(RecordError::Descriptor {
                which,
                recorded,
                certified,
            });
        }
    }
    let name: String = e.extract_subject().map_err(|err| malformed("name", err))?;
    let epoch: u64 = e
        .extract_object_for_predicate(EPOCH)
        .map_err(|err| malformed(EPOCH, err))?;
    let network = text(NETWORK)?;
    if name != meta.name || epoch != meta.epoch || network != meta.network.to_string() {
        return Err(RecordError::Malformed(format!(
            "it is labelled {name:?} on {network} at epoch {epoch} but its history certifies {:?} on {} at epoch {}",
            meta.name, meta.network, meta.epoch
        )));
    }
    Ok(meta)
}

/// What one signer answered to [`crate::message::CoordinatorToSigner::WalletRecords`].
#[derive(Debug, Clone)]
pub struct SignerRecords {
    /// The signer as the operator gave it (URL, identity key, TLS pin; the index is ignored).
    pub signer: RosterEntry,
    /// Its records.
    pub records: Vec<WalletRecord>,
}

/// Why wallets cannot be rebuilt from the signers' records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// No signer holds a (matching) wallet bound to this coordinator.
    #[error("no signer returned {}; a signer returns only the wallets bound to this coordinator", match .0 { Some(n) => format!("a wallet named '{n}'"), None => "any wallet".to_string() })]
    NoWallet(Option<String>),
    /// A record does not check out.
    #[error(
        "signer {signer} returned a record of wallet '{wallet}' that does not check out: {reason}"
    )]
    Invalid {
        /// The signer.
        signer: Box<IdentityPublic>,
        /// The wallet.
        wallet: String,
        /// What is wrong.
        reason: String,
    },
    /// The signers give different histories of one wallet.
    #[error("the signers disagree about wallet '{wallet}': {a} gives epoch {a_epoch}, {b} gives epoch {b_epoch}{}; nothing was stored (a transition may be unfinished)", if a_epoch == b_epoch { " with another history" } else { "" })]
    Disagree {
        /// The wallet.
        wallet: String,
        /// One signer.
        a: Box<IdentityPublic>,
        /// Its epoch.
        a_epoch: u64,
        /// Another.
        b: Box<IdentityPublic>,
        /// Its epoch.
        b_epoch: u64,
    },
    /// Fewer signers than the threshold vouch for the wallet.
    #[error("only {have} signer(s) returned wallet '{wallet}', fewer than its threshold {need}")]
    TooFew {
        /// The wallet.
        wallet: String,
        /// Signers that returned it.
        have: usize,
        /// Its threshold.
        need: u16,
    },
}

/// Rebuilds the wallets the signers returned (only `name` when given): see the module
/// documentation for the checks. The roster's endpoints are those given for the signers that
/// answered, the certified ones for the others. Each wallet is returned ready to store; it
/// has no chain data until it is synced.
///
/// # Errors
/// [`RecoverError`] naming the wallet and signers.
pub fn recover(
    answers: &[SignerRecords],
    name: Option<&str>,
) -> Result<Vec<WalletMeta>, RecoverError> {
    let mut by_group: BTreeMap<GroupKey, Vec<(&RosterEntry, &WalletRecord)>> = BTreeMap::new();
    for a in answers {
        for r in &a.records {
            if name.is_some_and(|n| n != r.name) {
                continue;
            }
            by_group
                .entry(r.group_key)
                .or_default()
                .push((&a.signer, r));
        }
    }
    if by_group.is_empty() {
        return Err(RecoverError::NoWallet(name.map(str::to_string)));
    }
    let mut out = Vec::new();
    for (group_key, records) in by_group {
        let mut checked: Vec<(&RosterEntry, &WalletRecord)> = Vec::new();
        let mut state = None;
        for (signer, record) in records {
            let invalid = |reason: String| RecoverError::Invalid {
                signer: Box::new(signer.identity),
                wallet: record.name.clone(),
                reason,
            };
            let s = record
                .history
                .verify()
                .map_err(|e| invalid(format!("its certified history: {e}")))?;
            if GroupKey::of(&s.group) != group_key || record.epoch != s.epoch {
                return Err(invalid(format!(
                    "it is labelled group {group_key} at epoch {} but certifies group {} at epoch {}",
                    record.epoch,
                    GroupKey::of(&s.group),
                    s.epoch
                )));
            }
            if record.history.keygen.context.wallet != record.name {
                return Err(invalid("its name is not the certified one".into()));
            }
            match s.roster.get(record.index) {
                Some(e) if e.identity == signer.identity => {}
                _ => {
                    return Err(invalid(format!(
                        "the certified roster of epoch {} does not give index {} to this signer",
                        s.epoch, record.index
                    )))
                }
            }
            if let Some((other, first)) = checked.first() {
                if first.history != record.history {
                    return Err(RecoverError::Disagree {
                        wallet: record.name.clone(),
                        a: Box::new(other.identity),
                        a_epoch: first.epoch,
                        b: Box::new(signer.identity),
                        b_epoch: record.epoch,
                    });
                }
            }
            if !checked.iter().any(|(o, _)| o.identity == signer.identity) {
                checked.push((signer, record));
            }
            state = Some(s);
        }
        let (Some(state), Some((_, record))) = (state, checked.first()) else {
            continue;
        };
        let need = state.group.threshold();
        if checked.len() < usize::from(need) {
            return Err(RecoverError::TooFew {
                wallet: record.name.clone(),
                have: checked.len(),
                need,
            });
        }
        let mut roster = state.roster.clone();
        for (signer, r) in &checked {
            roster.set_endpoint(r.index, signer.url.clone(), signer.tls_sha256);
        }
        let meta = WalletMeta {
            name: record.name.clone(),
            network: record.history.keygen.context.network,
            group: state.group,
            roster,
            electrum: None,
            keygen: Some(record.history.keygen.clone()),
            epoch: state.epoch,
            transitions: record.history.transitions.clone(),
            pending: None,
        };
        meta.verify().map_err(|e| RecoverError::Invalid {
            signer: Box::new(checked[0].0.identity),
            wallet: record.name.clone(),
            reason: e.to_string(),
        })?;
        out.push(meta);
    }
    Ok(out)
}
