//! Share backups: everything a signer needs to rejoin its wallets as itself — its identity
//! key, and for each wallet its key share, roster index, epoch, public record (the certified
//! key generation and every transition since) and policy, plus the approved peers — in one
//! Gordian Envelope, encrypted, its content key split with SSKR into `t`-of-`n` shares; each
//! share is a copy of the encrypted envelope carrying one `sskrShare`, written as a
//! `ur:envelope/…` text (Blockchain Commons' `bc-envelope`, `bc-components`, `sskr`,
//! `bc-ur`). Optionally the content is also locked with a backup passphrase (Argon2id) inside
//! the SSKR layer, so that `t` shares alone do not open it.
//!
//! ```text
//! ENCRYPTED [                          one per share file (ur:envelope/…)
//!     "signer": "<identity public key>"    a label, checked against the content
//!     "created": <unix time>
//!     'sskrShare': SSKRShare               this file's share of the content key
//! ]
//! └─ decrypted: { "<identity public key>" [      (or, with a backup passphrase,
//!        'isA': "ckm-signer-backup"                ENCRYPTED ['hasSecret': EncryptedKey]
//!        "version": 1                              around it)
//!        "identity": BYTES(32)               the identity secret key
//!        "created": <unix time>
//!        "peers": "<JSON>"
//!        "wallet": "<group key>" [ "record": "<JSON>", "share": BYTES, "policy": "<JSON>" ]
//!        …one "wallet" per wallet
//!    ] }
//! ```
//!
//! [`split`] and [`combine`] are pure (no files); a restore is checked completely — every
//! wallet's history re-verified offline, each share matched against the certified group and
//! roster — before anything is written ([`crate::signer::home::SignerHome::restore`]).
//!
//! The signer also answers [`CoordinatorToSigner::WalletRecords`] here: the public records of
//! the wallets bound to the asking coordinator, from which `ckm wallet recover` rebuilds a
//! lost coordinator database.
//!
//! [`CoordinatorToSigner::WalletRecords`]: crate::message::CoordinatorToSigner::WalletRecords

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use bc_components::{
    sskr_combine, KeyDerivationMethod, SSKRGroupSpec, SSKRShare, SSKRSpec, SymmetricKey,
};
use bc_envelope::prelude::*;
use bc_envelope::Envelope;
use dcbor::ByteString;
use rand::{CryptoRng, RngCore};

use crate::frost::shares::{roster_index, KeyError, KeyShare};
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::GroupKey;
use crate::message::{ErrorCode, SignerToCoordinator, WalletRecord};
use crate::signer::home::{HomeError, SignerHome, WalletInfo};
use crate::signer::peers::Peers;
use crate::signer::policy::Policy;
use crate::signer::{refuse, Refusal, Signer};

/// The `isA` of a signer backup's content.
pub const BACKUP_TYPE: &str = "ckm-signer-backup";
/// The format version of the content.
pub const BACKUP_VERSION: u64 = 1;
/// The UR type of every share text.
pub const UR_TYPE: &str = "envelope";
/// Largest share text read (a share carries a copy of the whole encrypted backup).
pub const MAX_SHARE_TEXT: usize = 16 << 20;

const SIGNER: &str = "signer";
const CREATED: &str = "created";
const VERSION: &str = "version";
const IDENTITY: &str = "identity";
const PEERS: &str = "peers";
const WALLET: &str = "wallet";
const RECORD: &str = "record";
const SHARE: &str = "share";
const POLICY: &str = "policy";

/// How many SSKR shares, and how many of them restore: `t`-of-`n`, `1 <= t <= n <= 16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    threshold: u8,
    shares: u8,
}

impl Split {
    /// The most shares SSKR makes in one group.
    pub const MAX: u8 = 16;

    /// A `threshold`-of-`shares` split.
    ///
    /// # Errors
    /// [`BackupError::Split`] unless `1 <= threshold <= shares <= 16`.
    pub fn new(threshold: u8, shares: u8) -> Result<Self, BackupError> {
        if threshold == 0 || threshold > shares || shares > Self::MAX {
            return Err(BackupError::Split(format!(
                "{threshold}of{shares}: need 1 <= threshold <= shares <= {}",
                Self::MAX
            )));
        }
        Ok(Split { threshold, shares })
    }

    /// Shares needed to restore.
    pub fn threshold(self) -> u8 {
        self.threshold
    }

    /// Shares made.
    pub fn shares(self) -> u8 {
        self.shares
    }
}

impl FromStr for Split {
    type Err = BackupError;

    /// `TofN` (e.g. `2of3`) or `T-of-N`.
    fn from_str(s: &str) -> Result<Self, BackupError> {
        let lower = s.trim().to_ascii_lowercase();
        let (t, n) = lower
            .split_once("-of-")
            .or_else(|| lower.split_once("of"))
            .ok_or_else(|| BackupError::Split(format!("'{s}' is not of the form 2of3")))?;
        let parse = |x: &str| {
            x.parse::<u8>()
                .map_err(|_| BackupError::Split(format!("'{s}' is not of the form 2of3")))
        };
        Split::new(parse(t)?, parse(n)?)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}of{}", self.threshold, self.shares)
    }
}

/// One wallet of a backup.
pub struct WalletBackup {
    /// The wallet's public record on this signer (with its certified history).
    pub info: WalletInfo,
    /// This signer's share (secret).
    pub share: KeyShare,
    /// This signer's policy for the wallet.
    pub policy: Policy,
}

impl fmt::Debug for WalletBackup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalletBackup")
            .field("wallet", &self.info.name)
            .field("group_key", &self.info.group_key)
            .field("index", &self.info.index)
            .field("epoch", &self.info.epoch)
            .field("share", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Everything a signer needs to rejoin its wallets as itself.
pub struct SignerBackup {
    /// The signer's identity key (secret).
    pub identity: IdentityKey,
    /// The wallets.
    pub wallets: Vec<WalletBackup>,
    /// The approved peers.
    pub peers: Peers,
    /// When the backup was taken (Unix seconds).
    pub created: u64,
}

impl fmt::Debug for SignerBackup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerBackup")
            .field("identity", &self.identity.public())
            .field("wallets", &self.wallets)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Why a backup cannot be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The requested split is not possible.
    #[error("invalid split {0}")]
    Split(String),
    /// The signer's home failed.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The signer holds no wallet (or none was chosen).
    #[error("this signer holds no wallet to back up")]
    NoWallets,
    /// A wallet is in the middle of a transition.
    #[error("wallet {wallet} has a pending transition (to epoch {epoch}); its coordinator must commit or abort it before the backup is taken")]
    Pending {
        /// The wallet.
        wallet: String,
        /// The epoch it leads to.
        epoch: u64,
    },
    /// The wallet's record does not check out (or it has no certified history).
    #[error("wallet {wallet}: {reason}")]
    Inconsistent {
        /// The wallet.
        wallet: String,
        /// What is wrong.
        reason: String,
    },
    /// A key share could not be encoded.
    #[error("wallet {wallet}: cannot encode its share")]
    Key {
        /// The wallet.
        wallet: String,
        /// The cause.
        #[source]
        source: KeyError,
    },
    /// The envelope library failed.
    #[error("cannot build the backup envelope: {0}")]
    Envelope(String),
}

/// Why shares do not restore a backup. Nothing is written when any of these is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// No share given.
    #[error("no backup share given")]
    NoShares,
    /// A file is not a readable `ur:envelope` (a corrupted character fails its checksum).
    #[error("{file}: not a readable ur:envelope share ({reason}); the file is corrupted or not a ckm backup share")]
    Unreadable {
        /// The file.
        file: String,
        /// What failed.
        reason: String,
    },
    /// A file is an envelope but not a share of a ckm signer backup.
    #[error("{file}: not a ckm signer backup share ({reason})")]
    NotAShare {
        /// The file.
        file: String,
        /// What is missing.
        reason: String,
    },
    /// Shares of different backups were given.
    #[error("{file} belongs to another backup than {first} (backup {theirs} vs {ours}); give shares of one backup only")]
    DifferentBackups {
        /// The first file.
        first: String,
        /// The file from another backup.
        file: String,
        /// The first file's backup (SSKR identifier and label).
        ours: String,
        /// The other file's backup.
        theirs: String,
    },
    /// The same share twice.
    #[error("{file} is the same share (number {member}) as {other}")]
    Duplicate {
        /// The file.
        file: String,
        /// The earlier file.
        other: String,
        /// The share's 1-based number.
        member: usize,
    },
    /// Fewer shares than the backup's threshold.
    #[error(
        "this backup needs {need} shares; {have} given (any {need} of the files the backup wrote)"
    )]
    TooFewShares {
        /// Shares given.
        have: usize,
        /// Shares needed.
        need: usize,
    },
    /// The shares do not combine into the key that opens the backup.
    #[error("the shares do not open the backup: one of them is corrupted or was altered ({0})")]
    DoNotCombine(String),
    /// The backup is also locked with a backup passphrase.
    #[error("this backup is also protected by a backup passphrase, and none was given")]
    PassphraseRequired,
    /// The backup passphrase does not open it.
    #[error("the backup passphrase does not open this backup")]
    WrongPassphrase,
    /// The content is not a backup this build reads.
    #[error("the backup's content is malformed: {0}")]
    Malformed(String),
    /// The content does not check out.
    #[error("wallet {wallet}: {reason}")]
    Inconsistent {
        /// The wallet.
        wallet: String,
        /// What is wrong.
        reason: String,
    },
}

/// The shares of one backup, as `ur:envelope` texts.
#[derive(Debug, Clone)]
pub struct BackupShares {
    /// The SSKR identifier every share of this backup carries (random, 16 bits).
    pub identifier: u16,
    /// The split.
    pub split: Split,
    /// One `ur:envelope/…` text per share, in share order.
    pub texts: Vec<String>,
}

/// bc-rand's generator over ours (the same `rand_core` traits).
struct BcRng<'a, R>(&'a mut R);

impl<R: RngCore> RngCore for BcRng<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl<R: CryptoRng> CryptoRng for BcRng<'_, R> {}

impl<R: RngCore + CryptoRng> bc_rand::RandomNumberGenerator for BcRng<'_, R> {}

fn envelope_err(e: impl fmt::Display) -> BackupError {
    BackupError::Envelope(e.to_string())
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, BackupError> {
    serde_json::to_string(value).map_err(envelope_err)
}

/// Re-checks one wallet of a backup against its own certified history: the history verifies
/// offline and ends at the wallet's epoch, the share belongs to exactly the certified group of
/// that epoch at the wallet's index, and that index names `identity`.
fn check_wallet(
    info: &WalletInfo,
    share: &KeyShare,
    identity: &IdentityPublic,
) -> Result<(), String> {
    let history = info
        .history()
        .ok_or("it predates certified key generation and cannot be restored from its record")?;
    let state = history
        .verify()
        .map_err(|e| format!("its certified history does not check out: {e}"))?;
    if history.keygen.context.wallet != info.name || history.keygen.context.network != info.network
    {
        return Err("its name or network differ from the certified ones".into());
    }
    if state.epoch != info.epoch {
        return Err(format!(
            "its history ends at epoch {} but the record says epoch {}",
            state.epoch, info.epoch
        ));
    }
    if GroupKey::of(&state.group) != info.group_key {
        return Err("its history certifies another group key".into());
    }
    if state.group != *share.group() {
        return Err(format!(
            "the share belongs to another epoch or group than the certified epoch {}",
            state.epoch
        ));
    }
    if roster_index(&share.identifier()) != info.index {
        return Err(format!(
            "the share is for index {} but the record says index {}",
            roster_index(&share.identifier()),
            info.index
        ));
    }
    match state.roster.get(info.index) {
        Some(entry) if entry.identity == *identity => Ok(()),
        Some(entry) => Err(format!(
            "the certified roster gives index {} to {}, not to this signer ({identity})",
            info.index, entry.identity
        )),
        None => Err(format!(
            "index {} is not in the certified roster of epoch {}",
            info.index, state.epoch
        )),
    }
}

impl SignerBackup {
    /// Collects the backup of `home`: its identity, the chosen wallets (by name or group key;
    /// every wallet when `wallets` is empty) with their shares and policies, and the peers.
    /// Each wallet is checked as a restore would check it, so a backup that would not
    /// restore is never written.
    ///
    /// # Errors
    /// An unknown wallet, a pending transition, an inconsistent or uncertified record, or a
    /// store failure.
    pub fn from_home(
        home: &SignerHome,
        wallets: &[String],
        created: u64,
    ) -> Result<Self, BackupError> {
        let infos = if wallets.is_empty() {
            home.wallets()?
        } else {
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for w in wallets {
                let info = home.wallet(w)?;
                if seen.insert(info.group_key) {
                    out.push(info);
                }
            }
            out
        };
        if infos.is_empty() {
            return Err(BackupError::NoWallets);
        }
        let identity = IdentityKey::from_secret_bytes(&home.identity().secret_bytes())
            .map_err(|e| BackupError::Envelope(e.to_string()))?;
        let public = identity.public();
        let mut out = Vec::with_capacity(infos.len());
        for info in infos {
            if let Some((_, epoch)) = home.pending_transition(&info.group_key)? {
                return Err(BackupError::Pending {
                    wallet: info.name,
                    epoch,
                });
            }
            let share = home.load_share(&info.group_key)?;
            check_wallet(&info, &share, &public).map_err(|reason| BackupError::Inconsistent {
                wallet: info.name.clone(),
                reason,
            })?;
            let policy = home.policy(&info.group_key)?;
            out.push(WalletBackup {
                info,
                share,
                policy,
            });
        }
        Ok(SignerBackup {
            identity,
            wallets: out,
            peers: home.load_peers()?,
            created,
        })
    }

    /// The backup's content as an envelope (secret: never written as is).
    fn to_envelope(&self) -> Result<Envelope, BackupError> {
        let identity = self.identity.secret_bytes();
        let mut e = Envelope::new(self.identity.public().to_string())
            .add_assertion(known_values::IS_A, BACKUP_TYPE)
            .add_assertion(VERSION, BACKUP_VERSION)
            .add_assertion(IDENTITY, ByteString::from(identity.as_slice()))
            .add_assertion(CREATED, self.created)
            .add_assertion(PEERS, json(&self.peers)?);
        for w in &self.wallets {
            let share = w
                .share
                .to_secret_bytes()
                .map_err(|source| BackupError::Key {
                    wallet: w.info.name.clone(),
                    source,
                })?;
            let wallet = Envelope::new(w.info.group_key.to_string())
                .add_assertion(RECORD, json(&w.info)?)
                .add_assertion(SHARE, ByteString::from(share.as_slice()))
                .add_assertion(POLICY, json(&w.policy)?);
            e = e.add_assertion(WALLET, wallet);
        }
        Ok(e)
    }

    /// Reads and checks a backup's content.
    fn from_envelope(e: &Envelope) -> Result<Self, RestoreError> {
        let bad =
            |what: &str, err: &dyn fmt::Display| RestoreError::Malformed(format!("{what}: {err}"));
        let is_a: String = e
            .extract_object_for_predicate(known_values::IS_A)
            .map_err(|err| bad("isA", &err))?;
        if is_a != BACKUP_TYPE {
            return Err(RestoreError::Malformed(format!(
                "it is a {is_a:?}, not a {BACKUP_TYPE:?}"
            )));
        }
        let version: u64 = e
            .extract_object_for_predicate(VERSION)
            .map_err(|err| bad(VERSION, &err))?;
        if version != BACKUP_VERSION {
            return Err(RestoreError::Malformed(format!(
                "format version {version}; this build reads version {BACKUP_VERSION}"
            )));
        }
        let secret = zeroize::Zeroizing::new(
            e.object_for_predicate(IDENTITY)
                .and_then(|o| o.subject().try_byte_string())
                .map_err(|err| bad(IDENTITY, &err))?,
        );
        let bytes: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
            secret
                .as_slice()
                .try_into()
                .map_err(|_| RestoreError::Malformed("the identity key is not 32 bytes".into()))?,
        );
        let identity = IdentityKey::from_secret_bytes(&bytes).map_err(|err| bad(IDENTITY, &err))?;
        let label: String = e.extract_subject().map_err(|err| bad("subject", &err))?;
        if label != identity.public().to_string() {
            return Err(RestoreError::Malformed(format!(
                "it names signer {label} but holds the identity key of {}",
                identity.public()
            )));
        }
        let created: u64 = e
            .extract_object_for_predicate(CREATED)
            .map_err(|err| bad(CREATED, &err))?;
        let peers: String = e
            .extract_object_for_predicate(PEERS)
            .map_err(|err| bad(PEERS, &err))?;
        let peers: Peers = serde_json::from_str(&peers).map_err(|err| bad(PEERS, &err))?;
        let public = identity.public();
        let mut wallets = Vec::new();
        let mut seen = BTreeSet::new();
        for w in e.objects_for_predicate(WALLET) {
            let record: String = w
                .extract_object_for_predicate(RECORD)
                .map_err(|err| bad(RECORD, &err))?;
            let info: WalletInfo =
                serde_json::from_str(&record).map_err(|err| bad(RECORD, &err))?;
            let inconsistent = |reason: String| RestoreError::Inconsistent {
                wallet: info.name.clone(),
                reason,
            };
            let key: String = w.extract_subject().map_err(|err| bad(WALLET, &err))?;
            if key != info.group_key.to_string() {
                return Err(inconsistent(format!(
                    "listed under group key {key} but its record is for {}",
                    info.group_key
                )));
            }
            if !seen.insert(info.group_key) {
                return Err(inconsistent("listed twice".into()));
            }
            let share = zeroize::Zeroizing::new(
                w.object_for_predicate(SHARE)
                    .and_then(|o| o.subject().try_byte_string())
                    .map_err(|err| bad(SHARE, &err))?,
            );
            let share = KeyShare::from_secret_bytes(&share)
                .map_err(|err| inconsistent(format!("its share is invalid: {err}")))?;
            let policy: String = w
                .extract_object_for_predicate(POLICY)
                .map_err(|err| bad(POLICY, &err))?;
            let policy: Policy = serde_json::from_str(&policy).map_err(|err| bad(POLICY, &err))?;
            check_wallet(&info, &share, &public).map_err(inconsistent)?;
            wallets.push(WalletBackup {
                info,
                share,
                policy,
            });
        }
        if wallets.is_empty() {
            return Err(RestoreError::Malformed("it holds no wallet".into()));
        }
        Ok(SignerBackup {
            identity,
            wallets,
            peers,
            created,
        })
    }
}

/// Encrypts the backup under a fresh content key, optionally locks it with `passphrase`
/// (Argon2id) inside, and splits the content key with SSKR: one `ur:envelope/…` text per
/// share, each a copy of the encrypted backup with its own `sskrShare`.
///
/// # Errors
/// Only when the envelope library refuses its own input (a bug) or the share cannot be
/// encoded.
pub fn split<R: RngCore + CryptoRng>(
    backup: &SignerBackup,
    split: Split,
    passphrase: Option<&[u8]>,
    rng: &mut R,
) -> Result<BackupShares, BackupError> {
    let content = backup.to_envelope()?;
    let payload = match passphrase {
        Some(p) => content
            .wrap()
            .lock_subject(KeyDerivationMethod::Argon2id, p)
            .map_err(envelope_err)?,
        None => content,
    };
    let content_key = SymmetricKey::new_using(&mut BcRng(rng));
    let encrypted = payload
        .wrap()
        .encrypt_subject(&content_key)
        .map_err(envelope_err)?
        .add_assertion(SIGNER, backup.identity.public().to_string())
        .add_assertion(CREATED, backup.created);
    let group = SSKRGroupSpec::new(usize::from(split.threshold), usize::from(split.shares))
        .map_err(|e| BackupError::Split(e.to_string()))?;
    let spec = SSKRSpec::new(1, vec![group]).map_err(|e| BackupError::Split(e.to_string()))?;
    let groups = encrypted
        .sskr_split_using(&spec, &content_key, &mut BcRng(rng))
        .map_err(envelope_err)?;
    let shares: Vec<Envelope> = groups.into_iter().flatten().collect();
    let mut identifier = 0;
    let mut texts = Vec::with_capacity(shares.len());
    for s in &shares {
        identifier = share_of(s).map_err(envelope_err)?.identifier();
        let ur = bc_ur::UR::new(UR_TYPE, s.untagged_cbor()).map_err(envelope_err)?;
        texts.push(ur.string());
    }
    Ok(BackupShares {
        identifier,
        split,
        texts,
    })
}

/// The one SSKR share an envelope carries.
fn share_of(e: &Envelope) -> Result<SSKRShare, String> {
    let assertions = e.assertions_with_predicate(known_values::SSKR_SHARE);
    let [assertion] = assertions.as_slice() else {
        return Err(format!(
            "it carries {} sskrShare assertions, not one",
            assertions.len()
        ));
    };
    assertion
        .as_object()
        .ok_or("its sskrShare has no object")?
        .extract_subject::<SSKRShare>()
        .map_err(|e| e.to_string())
}

/// A readable description of which backup a share belongs to.
fn describe(e: &Envelope, share: &SSKRShare) -> String {
    let signer: Option<String> = e.extract_object_for_predicate(SIGNER).ok();
    let created: Option<u64> = e.extract_object_for_predicate(CREATED).ok();
    format!(
        "{} of signer {} made at {}",
        share.identifier_hex(),
        signer.as_deref().unwrap_or("?"),
        created.map_or_else(|| "?".to_string(), |c| c.to_string())
    )
}

/// Opens a backup from its shares, `(file name, text)` each: checks that every text is a
/// share of one backup (same SSKR identifier and the same encrypted content), that no share
/// is given twice and that there are at least as many as its threshold; combines them,
/// decrypts, unlocks with `passphrase` when the backup is locked with one, and checks the
/// content (see [`SignerBackup`]'s checks). Pure: nothing is written.
///
/// # Errors
/// [`RestoreError`] naming the file or the problem.
pub fn combine(
    files: &[(String, String)],
    passphrase: Option<&[u8]>,
) -> Result<SignerBackup, RestoreError> {
    let Some((first_file, _)) = files.first() else {
        return Err(RestoreError::NoShares);
    };
    let mut parsed: Vec<(String, Envelope, SSKRShare)> = Vec::with_capacity(files.len());
    for (file, text) in files {
        let unreadable = |reason: String| RestoreError::Unreadable {
            file: file.clone(),
            reason,
        };
        if text.len() > MAX_SHARE_TEXT {
            return Err(unreadable(format!("longer than {MAX_SHARE_TEXT} bytes")));
        }
        let ur = bc_ur::UR::from_ur_string(text.trim().to_ascii_lowercase())
            .map_err(|e| unreadable(e.to_string()))?;
        if ur.ur_type_str() != UR_TYPE {
            return Err(unreadable(format!(
                "a ur:{}, not a ur:{UR_TYPE}",
                ur.ur_type_str()
            )));
        }
        let envelope =
            Envelope::from_untagged_cbor(ur.cbor()).map_err(|e| unreadable(e.to_string()))?;
        let share = share_of(&envelope).map_err(|reason| RestoreError::NotAShare {
            file: file.clone(),
            reason,
        })?;
        if !envelope.subject().is_encrypted() {
            return Err(RestoreError::NotAShare {
                file: file.clone(),
                reason: "its content is not encrypted".into(),
            });
        }
        parsed.push((file.clone(), envelope, share));
    }
    let (_, first, first_share) = &parsed[0];
    let digest = first.subject().digest().into_owned();
    let mut members: Vec<(usize, &str)> = Vec::new();
    for (file, envelope, share) in &parsed {
        if share.identifier() != first_share.identifier()
            || envelope.subject().digest().as_ref() != &digest
            || share.group_count() != first_share.group_count()
            || share.member_threshold() != first_share.member_threshold()
        {
            return Err(RestoreError::DifferentBackups {
                first: first_file.clone(),
                file: file.clone(),
                ours: describe(first, first_share),
                theirs: describe(envelope, share),
            });
        }
        let member = share.member_index() + 1;
        if let Some((_, other)) = members.iter().find(|(m, _)| *m == member) {
            return Err(RestoreError::Duplicate {
                file: file.clone(),
                other: (*other).to_string(),
                member,
            });
        }
        members.push((member, file));
    }
    let need = first_share.member_threshold();
    if parsed.len() < need {
        return Err(RestoreError::TooFewShares {
            have: parsed.len(),
            need,
        });
    }
    let shares: Vec<SSKRShare> = parsed.iter().map(|(_, _, s)| s.clone()).collect();
    let secret = sskr_combine(&shares).map_err(|e| RestoreError::DoNotCombine(e.to_string()))?;
    let content_key = SymmetricKey::from_data_ref(secret.data())
        .map_err(|e| RestoreError::DoNotCombine(e.to_string()))?;
    let payload = first
        .decrypt_subject(&content_key)
        .map_err(|e| RestoreError::DoNotCombine(e.to_string()))?
        .subject()
        .try_unwrap()
        .map_err(|e| RestoreError::Malformed(e.to_string()))?;
    let content = if payload.is_locked_with_password() {
        let p = passphrase.ok_or(RestoreError::PassphraseRequired)?;
        payload
            .unlock_subject(p)
            .map_err(|_| RestoreError::WrongPassphrase)?
            .subject()
            .try_unwrap()
            .map_err(|e| RestoreError::Malformed(e.to_string()))?
    } else {
        payload
    };
    SignerBackup::from_envelope(&content)
}

impl Signer {
    /// [`crate::message::CoordinatorToSigner::WalletRecords`]: the public records of the
    /// certified wallets bound to `from` (as creator or added by the operator).
    pub(super) fn wallet_records(
        &self,
        from: &IdentityPublic,
    ) -> Result<SignerToCoordinator, Refusal> {
        let wallets = self
            .home
            .wallets()
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        let mut records = Vec::new();
        for info in wallets {
            if self.check_bound(from, &info).is_err() {
                continue;
            }
            let Some(history) = info.history() else {
                continue;
            };
            records.push(WalletRecord {
                name: info.name,
                group_key: info.group_key,
                epoch: info.epoch,
                index: info.index,
                history,
            });
        }
        Ok(SignerToCoordinator::WalletRecords(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parses() {
        assert_eq!("2of3".parse::<Split>().unwrap(), Split::new(2, 3).unwrap());
        assert_eq!(
            "3-of-5".parse::<Split>().unwrap(),
            Split::new(3, 5).unwrap()
        );
        for bad in ["3of2", "0of3", "2of17", "2by3", "of3", "x"] {
            assert!(bad.parse::<Split>().is_err(), "{bad}");
        }
    }
}
