//! What to run next, for the errors whose fix is a ckm command. The library's errors say what
//! is wrong in the library's terms (a signer refused with [`ErrorCode::UnapprovedPeer`], a
//! wallet has no recovery path, …); the command line knows its own commands and flags, so it
//! adds the hint here. Printed after the error (`hint: …`, or a `hint` field with `--json`).

use ckm::message::ErrorCode;
use ckm::net::client::CallError;
use ckm::recovery::script_path::SignRecoveryError;
use ckm::signer::backup::{BackupError, RestoreError};
use ckm::signer::home::HomeError;
use ckm::wallet::record::{ConfirmError, RecoverError};
use ckm::wallet::{RecipientError, ReplaceError, WalletError};

/// The hint for the first error in `e`'s chain that has one.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .find_map(one)
        .or_else(|| e.chain().find_map(|e| by_text(&e.to_string())))
}

/// Hints for failures that reach the CLI only as text: the co-signing state machine
/// (`ckm::protocol::cosign`) gathers each excluded signer's reason as the text of its
/// [`CallError`], so a signing that failed for lack of signers is matched here by what the
/// signers said.
fn by_text(text: &str) -> Option<String> {
    const MARKERS: &[(&str, ErrorCode)] = &[
        (
            "is bound to the coordinator that created it",
            ErrorCode::WrongCoordinator,
        ),
        ("is not an approved peer", ErrorCode::UnapprovedPeer),
        ("orders a state reset", ErrorCode::State),
        (", the request is for epoch", ErrorCode::WrongEpoch),
        // Another transition pending: `refusal` matches its words whatever the code.
        ("is pending", ErrorCode::Refused),
    ];
    if text.contains("presented a TLS certificate with sha256") {
        return Some(PIN.into());
    }
    MARKERS
        .iter()
        .filter(|(marker, _)| text.contains(marker))
        .find_map(|(_, code)| refusal(*code, text))
}

const PIN: &str = "if the signer's operator rotated its certificate (`ckm signer tls --rotate`), \
     run `ckm wallet update-pin`, which checks the signer's signed statement of the new \
     fingerprint";

fn one(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(e) = e.downcast_ref::<CallError>() {
        return call(e);
    }
    if let Some(e) = e.downcast_ref::<RecoverError>() {
        return match e {
            RecoverError::NoWallet(_) => Some(ALLOW_COORDINATOR.into()),
            RecoverError::Disagree { .. } => Some(format!(
                "once the wallet is back, {RESUME}; otherwise ask the signers' operators"
            )),
            RecoverError::TooFew { need, .. } => Some(format!(
                "give at least {need} of the wallet's signers with --signer"
            )),
            _ => None,
        };
    }
    if let Some(ConfirmError::TooFew { need, .. }) = e.downcast_ref::<ConfirmError>() {
        return Some(format!(
            "at least {need} of the wallet's signers must be running, allow this coordinator and \
             hold the same wallet at the same epoch; give each as --trust PUBKEY or \
             --trust URL#PUBKEY (if the signers moved on to a later epoch, recover from them: \
             `ckm wallet recover --signer URL#PUBKEY …`)"
        ));
    }
    if let Some(HomeError::NotInitialized(_)) = e.downcast_ref::<HomeError>() {
        return Some("make it a signer home first: `ckm --home DIR signer init`".into());
    }
    if let Some(BackupError::Pending { .. }) = e.downcast_ref::<BackupError>() {
        return Some(format!("{RESUME}, then take the backup"));
    }
    if let Some(RestoreError::PassphraseRequired) = e.downcast_ref::<RestoreError>() {
        return Some("give the backup passphrase with --backup-passphrase-file FILE".into());
    }
    if let Some(e) = e.downcast_ref::<WalletError>() {
        return wallet(e);
    }
    if let Some(e) = e.downcast_ref::<RecipientError>() {
        return recipient(e);
    }
    if let Some(SignRecoveryError::NothingToSign { .. }) = e.downcast_ref::<SignRecoveryError>() {
        return Some(
            "recovery-path PSBTs are made with `ckm psbt create --recovery`; check that the key \
             is the wallet's recovery key"
                .into(),
        );
    }
    None
}

fn wallet(e: &WalletError) -> Option<String> {
    match e {
        WalletError::NoRecovery(_) => Some(
            "a recovery path is chosen at key generation: `ckm wallet create … --recovery-key`"
                .into(),
        ),
        WalletError::Frozen(op) => Some(format!(
            "unfreeze it first with `ckm wallet unfreeze {op}` if it is to be spent"
        )),
        WalletError::UnknownCoin(_) => {
            Some("`ckm wallet coins` lists the wallet's coins (run `ckm wallet sync` first)".into())
        }
        WalletError::FeeGuard(_) => Some(
            "check the fee rate (--fee-rate); if this fee is meant, pass --allow-high-fee".into(),
        ),
        WalletError::Recipient(e) => recipient(e),
        WalletError::Replace(ReplaceError::NotOurs(_)) => Some(
            "`ckm wallet history` lists the wallet's transactions (run `ckm wallet sync` first)"
                .into(),
        ),
        WalletError::Replace(ReplaceError::NoOwnOutput(_)) => Some(
            "a payment of this wallet can be bumped instead: `ckm wallet bump TXID --fee-rate R`"
                .into(),
        ),
        _ => None,
    }
}

fn recipient(e: &RecipientError) -> Option<String> {
    match e {
        RecipientError::MissingAmount { .. } => Some(
            "give each recipient as --to ADDR:AMOUNT (sats, or e.g. 0.001btc), ADDR:max, or \
             one --to ADDR with --amount"
                .into(),
        ),
        _ => None,
    }
}

const ALLOW_COORDINATOR: &str = "a signer serves only the coordinators bound to a wallet: its \
     operator can add this one with `ckm signer wallet allow-coordinator --wallet NAME <id>` \
     (`ckm id` prints this coordinator's id)";

const RESUME: &str = "finish the pending transition with `ckm wallet resume`";

fn call(e: &CallError) -> Option<String> {
    match e {
        CallError::Refused { code, message, .. } => refusal(*code, message),
        CallError::PinMismatch { .. } => Some(PIN.into()),
        CallError::WrongScheme { speaks, .. } if speaks.starts_with("HTTPS") => Some(
            "`ckm signer tls` on the signer prints the URL to use, with its fingerprint".into(),
        ),
        CallError::WrongScheme { .. } => {
            Some("a signer serves HTTPS when started with `ckm signer serve --tls`".into())
        }
        _ => None,
    }
}

fn refusal(code: ErrorCode, message: &str) -> Option<String> {
    match code {
        ErrorCode::UnapprovedPeer => Some(
            "if you trust the named signer's operator, each other signer's operator approves it \
             with `ckm signer peers add <id>` (or `ckm signer serve --allow-peer <id>`)"
                .into(),
        ),
        ErrorCode::WrongCoordinator => Some(ALLOW_COORDINATOR.into()),
        ErrorCode::State => Some(
            "the signer's operator checks its home, then runs `ckm signer state reset --reason \
             TEXT` (recorded in the audit log)"
                .into(),
        ),
        ErrorCode::WrongEpoch if message.contains("epoch") => {
            Some(format!("if a refresh or repair was interrupted, {RESUME}"))
        }
        // Another transition of the wallet is pending on the signer (refused at begin or
        // prepare; that refusal has no code of its own).
        _ if message.contains("is pending") && message.contains("commit or abort") => {
            Some(RESUME.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_get_the_command_that_fixes_them() {
        let refused = |code| {
            anyhow::Error::new(CallError::Refused {
                index: 2,
                code,
                message: "wallet w is at epoch 3, the request is for epoch 2".into(),
            })
            .context("co-signing failed")
        };
        let unapproved = hint(&refused(ErrorCode::UnapprovedPeer)).unwrap_or_default();
        assert!(unapproved.contains("ckm signer peers add"), "{unapproved}");
        let epoch = hint(&refused(ErrorCode::WrongEpoch)).unwrap_or_default();
        assert!(epoch.contains("ckm wallet resume"), "{epoch}");
        let policy = anyhow::Error::new(CallError::Refused {
            index: 1,
            code: ErrorCode::Policy,
            message: "the daily limit of 100000 sat would be exceeded".into(),
        });
        assert_eq!(hint(&policy), None);
        assert_eq!(hint(&anyhow::anyhow!("something else")), None);
    }

    #[test]
    fn signings_that_failed_for_lack_of_signers_get_hints_from_the_reasons() {
        let failed = anyhow::anyhow!(
            "only 1 of the 2 required signers could sign:\n  - signer 1 refused: wallet vault \
             is bound to the coordinator that created it (0e0f); coordinator 0e6b may use it \
             only once this signer's operator allows that coordinator for the wallet"
        );
        let allow = hint(&failed).unwrap_or_default();
        assert!(allow.contains("allow-coordinator"), "{allow}");
        let pinned = anyhow::anyhow!(
            "signer 1 (https://127.0.0.1:1) presented a TLS certificate with sha256 1a34, but \
             the wallet pins 8334"
        );
        let pin = hint(&pinned).unwrap_or_default();
        assert!(pin.contains("ckm wallet update-pin"), "{pin}");
    }

    #[test]
    fn a_frozen_coin_names_unfreeze() {
        let op = bitcoin::OutPoint::null();
        let e = anyhow::Error::new(WalletError::Frozen(op)).context("building");
        let text = hint(&e).unwrap_or_default();
        assert!(text.contains("ckm wallet unfreeze"), "{text}");
        let e = anyhow::Error::new(WalletError::FeeGuard(
            ckm::wallet::FeeGuardError::Absolute { fee: 2_000_000 },
        ));
        assert!(hint(&e).unwrap_or_default().contains("--allow-high-fee"));
    }
}
