//! Per-wallet spending policy of a signer: maximum fee (absolute and rate), maximum amount per
//! spend and per 24 hours, optional destination allowlist. Pure: judged against a
//! [`CheckedPsbt`] (in which change has already been re-derived and verified as ours).

use std::collections::BTreeMap;
use std::fmt;

use bitcoin::{Address, Network};
use serde::{Deserialize, Serialize};

use crate::identity::IdentityPublic;
use crate::keys::GroupKey;
use crate::psbt::CheckedPsbt;

/// One wallet's policy; `None` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Largest fee, in satoshis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fee_sats: Option<u64>,
    /// Largest fee rate, in sat/vB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fee_rate: Option<u64>,
    /// Largest amount paid out (excluding change and fee) by one spend, in satoshis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount_sats: Option<u64>,
    /// Largest amount paid out over any 24 hours, in satoshis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_limit_sats: Option<u64>,
    /// When not empty, the only destinations allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_addresses: Vec<String>,
    /// Coordinators allowed to use the wallet besides the one that created it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coordinators: Vec<IdentityPublic>,
}

/// All policies of a signer, by wallet group key, as the v1 file layout stored them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    /// Policy by group key.
    pub wallets: BTreeMap<GroupKey, Policy>,
}

/// The rule a spend broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// `max-fee-sats`.
    #[error("policy max-fee-sats: the fee of {fee} sat exceeds {max} sat")]
    Fee {
        /// The fee.
        fee: u64,
        /// The limit.
        max: u64,
    },
    /// `max-fee-rate`.
    #[error("policy max-fee-rate: the fee rate of {rate:.1} sat/vB exceeds {max} sat/vB")]
    FeeRate {
        /// The fee rate.
        rate: f64,
        /// The limit.
        max: u64,
    },
    /// `max-amount-sats`.
    #[error("policy max-amount-sats: {amount} sat would leave the wallet (payments plus fee), more than {max} sat per spend")]
    Amount {
        /// What would leave the wallet: inputs − change.
        amount: u64,
        /// The limit.
        max: u64,
    },
    /// `daily-limit-sats` on a restored signer: counted as spent for one window after the
    /// restore (it cannot know what it signed between the backup and the restore).
    #[error("policy daily-limit-sats: this signer was restored from a backup and counts the daily limit of {limit} sat as spent until {until} (unix time), one window after the restore")]
    Restored {
        /// When the window after the restore ends (unix seconds).
        until: u64,
        /// The limit.
        limit: u64,
    },
    /// `daily-limit-sats`.
    #[error("policy daily-limit-sats: {amount} sat leaving the wallet (payments plus fee) after {spent} sat in the last 24 hours exceeds {limit} sat")]
    Daily {
        /// What this spend takes out of the wallet (inputs − change).
        amount: u64,
        /// Already taken out (signed, or reserved by sessions in progress) in the window,
        /// as this signer and the statements it was given count it.
        spent: u64,
        /// The limit.
        limit: u64,
    },
    /// `allow-address`.
    #[error(
        "policy allow-address: output {output} pays {destination}, which is not on the allowlist"
    )]
    Destination {
        /// Output index.
        output: usize,
        /// Address or script of the destination.
        destination: String,
    },
}

impl Policy {
    /// Judges a checked spend against the per-spend rules (fee, fee rate, amount,
    /// allowlist). Amounts count what leaves the wallet: inputs − change, i.e. payments plus
    /// the fee. The window rule is [`Policy::check_window`].
    ///
    /// # Errors
    /// The first rule broken.
    pub fn check_spend(
        &self,
        spend: &CheckedPsbt,
        network: Network,
    ) -> Result<(), PolicyViolation> {
        let fee = spend.fee().to_sat();
        if let Some(max) = self.max_fee_sats {
            if fee > max {
                return Err(PolicyViolation::Fee { fee, max });
            }
        }
        if let Some(max) = self.max_fee_rate {
            let rate = fee as f64 / spend.estimated_vsize().max(1) as f64;
            if rate > max as f64 {
                return Err(PolicyViolation::FeeRate { rate, max });
            }
        }
        let amount = spend.outflow().to_sat();
        if let Some(max) = self.max_amount_sats {
            if amount > max {
                return Err(PolicyViolation::Amount { amount, max });
            }
        }
        if !self.allow_addresses.is_empty() {
            for out in spend.payments() {
                let destination = Address::from_script(&out.script_pubkey, network)
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| out.script_pubkey.to_hex_string());
                if !self.allow_addresses.contains(&destination) {
                    return Err(PolicyViolation::Destination {
                        output: out.index,
                        destination,
                    });
                }
            }
        }
        Ok(())
    }

    /// Judges the window rule: `total` is everything counted in the last 24 hours, this
    /// spend (`amount`) included once.
    ///
    /// # Errors
    /// [`PolicyViolation::Daily`].
    pub fn check_window(&self, amount: u64, total: u64) -> Result<(), PolicyViolation> {
        match self.daily_limit_sats {
            Some(limit) if total > limit => Err(PolicyViolation::Daily {
                amount,
                spent: total.saturating_sub(amount),
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Whether the policy sets any limit (extra coordinators are not limits).
    pub fn is_empty(&self) -> bool {
        self.max_fee_sats.is_none()
            && self.max_fee_rate.is_none()
            && self.max_amount_sats.is_none()
            && self.daily_limit_sats.is_none()
            && self.allow_addresses.is_empty()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.is_empty() {
            parts.push("no limits".to_string());
        }
        if let Some(v) = self.max_fee_sats {
            parts.push(format!("max-fee-sats {v}"));
        }
        if let Some(v) = self.max_fee_rate {
            parts.push(format!("max-fee-rate {v} sat/vB"));
        }
        if let Some(v) = self.max_amount_sats {
            parts.push(format!("max-amount-sats {v}"));
        }
        if let Some(v) = self.daily_limit_sats {
            parts.push(format!("daily-limit-sats {v}"));
        }
        for a in &self.allow_addresses {
            parts.push(format!("allow-address {a}"));
        }
        for c in &self.coordinators {
            parts.push(format!("coordinator {c}"));
        }
        f.write_str(&parts.join(", "))
    }
}
