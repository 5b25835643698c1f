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
//!
//! A record read from a file proves only that *some* group certified it: the file carries its
//! own roster, so an attacker's file certifies the attacker's keys. [`confirm`] checks such a
//! record against the answers of signers whose identity keys the user pinned: at least the
//! wallet's threshold of them must hold the same roster, group key, recovery policy, epoch
//! and certified history.

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
        birth_height: None,
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
            // Histories may differ only by a transition some members applied and others
            // not yet (an interrupted commit): one must be a prefix of the other. The
            // wallet is recovered at the shorter one, which both vouch for; `wallet resume`
            // then finishes the transition from the members' certificates.
            if let Some((other, first)) = checked.first() {
                if !prefix_related(&first.history, &record.history) {
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
                let shorter = checked.first().is_none_or(|(_, first)| {
                    record.history.transitions.len() < first.history.transitions.len()
                });
                if shorter {
                    checked.insert(0, (signer, record));
                    state = Some(s);
                } else {
                    checked.push((signer, record));
                }
            }
        }
        let (Some(state), Some((_, record))) = (state, checked.first().copied()) else {
            continue;
        };
        // Only members of the recovered epoch's roster vouch for it.
        checked.retain(|(signer, _)| state.roster.index_of(&signer.identity).is_some());
        let need = state.group.threshold();
        if checked.len() < usize::from(need) {
            return Err(RecoverError::TooFew {
                wallet: record.name.clone(),
                have: checked.len(),
                need,
            });
        }
        let mut roster = state.roster.clone();
        for (signer, _) in &checked {
            if let Some(index) = state.roster.index_of(&signer.identity) {
                roster.set_endpoint(index, signer.url.clone(), signer.tls_sha256);
            }
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
            birth_height: None,
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

/// Whether one history extends the other (same key generation, one's transitions a prefix
/// of the other's).
fn prefix_related(a: &History, b: &History) -> bool {
    let n = a.transitions.len().min(b.transitions.len());
    a.keygen == b.keygen && a.transitions[..n] == b.transitions[..n]
}

/// What one signer whose identity key the user pinned answered to
/// [`crate::message::CoordinatorToSigner::WalletRecords`] (the transport has checked that the
/// answer is signed by that key).
#[derive(Debug, Clone)]
pub struct PinnedAnswer {
    /// The pinned identity key.
    pub signer: IdentityPublic,
    /// Its records, or why there are none (unreachable, refused, not in the file's roster).
    pub answer: Result<Vec<WalletRecord>, String>,
}

/// The pinned signers that confirmed a record ([`confirm`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Confirmed {
    /// The signers whose own record equals the file's, in the order given.
    pub by: Vec<IdentityPublic>,
    /// The others, each with why it does not confirm.
    pub not: Vec<(IdentityPublic, String)>,
}

/// Why a wallet record was not confirmed by the pinned signers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfirmError {
    /// No signer was pinned.
    #[error("no signer identity key was pinned: a record's own roster cannot vouch for it")]
    NoPins,
    /// Fewer pinned signers than the wallet's threshold confirm it.
    #[error("only {have} of the pinned signers confirm wallet '{wallet}' (roster, group key, recovery policy, epoch {epoch}), fewer than its threshold {need}: {}", .not.iter().map(|(s, r)| format!("{s}: {r}")).collect::<Vec<_>>().join("; "))]
    TooFew {
        /// The wallet, as the record names it.
        wallet: String,
        /// The record's epoch.
        epoch: u64,
        /// Pinned signers that confirmed.
        have: usize,
        /// The wallet's threshold.
        need: u16,
        /// The pinned signers that did not confirm, and why.
        not: Vec<(IdentityPublic, String)>,
    },
}

/// Checks a record read from a file (`meta`, from [`from_bytes`]) against the answers of the
/// signers the user pinned (one [`PinnedAnswer`] each; an identity given twice counts once).
/// A pinned signer confirms when it holds, for this coordinator, a wallet with the record's
/// group key whose own certified history checks out, names it as the member at the index it
/// claims, and equals the record's: the same roster, recovery policy, epoch and every
/// transition. At least the wallet's threshold of pinned signers must confirm.
///
/// # Errors
/// [`ConfirmError`]: no pins, or too few confirmations (each refusal with its reason).
pub fn confirm(meta: &WalletMeta, answers: &[PinnedAnswer]) -> Result<Confirmed, ConfirmError> {
    if answers.is_empty() {
        return Err(ConfirmError::NoPins);
    }
    let mut by: Vec<IdentityPublic> = Vec::new();
    let mut not: Vec<(IdentityPublic, String)> = Vec::new();
    for a in answers {
        if by.contains(&a.signer) || not.iter().any(|(s, _)| *s == a.signer) {
            continue;
        }
        match confirms(meta, a) {
            Ok(()) => by.push(a.signer),
            Err(reason) => not.push((a.signer, reason)),
        }
    }
    let need = meta.group.threshold();
    if by.len() < usize::from(need) {
        return Err(ConfirmError::TooFew {
            wallet: meta.name.clone(),
            epoch: meta.epoch,
            have: by.len(),
            need,
            not,
        });
    }
    Ok(Confirmed { by, not })
}

/// Whether one pinned signer's answer confirms `meta`; if not, why.
fn confirms(meta: &WalletMeta, a: &PinnedAnswer) -> Result<(), String> {
    let records = a.answer.as_ref().map_err(|e| format!("no answer ({e})"))?;
    let group_key = GroupKey::of(&meta.group);
    let record = records
        .iter()
        .find(|r| r.group_key == group_key)
        .ok_or_else(|| {
            format!("holds no wallet with group key {group_key} bound to this coordinator")
        })?;
    let state = record
        .history
        .verify()
        .map_err(|e| format!("its own record does not check out: {e}"))?;
    if GroupKey::of(&state.group) != group_key {
        return Err(format!(
            "its record certifies group key {}, not {group_key}",
            GroupKey::of(&state.group)
        ));
    }
    match state.roster.get(record.index) {
        Some(e) if e.identity == a.signer => {}
        _ => {
            return Err(format!(
                "its certified roster does not give it index {}",
                record.index
            ))
        }
    }
    if state.epoch != meta.epoch {
        return Err(format!(
            "it is at epoch {}, the record at epoch {}",
            state.epoch, meta.epoch
        ));
    }
    let ids = |r: &Roster| -> Vec<(u16, IdentityPublic)> {
        r.entries().iter().map(|e| (e.index, e.identity)).collect()
    };
    if ids(&state.roster) != ids(&meta.roster) {
        return Err("it certifies another roster".into());
    }
    if record.history.keygen.context.recovery.as_ref() != meta.recovery() {
        return Err("it certifies another recovery policy".into());
    }
    if Some(&record.history) != meta.history().as_ref() {
        return Err("it certifies another history".into());
    }
    Ok(())
}
