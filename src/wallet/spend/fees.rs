//! Fee policy: the default fee rate (the chain source's estimate, or a documented fallback
//! when it has none) and the fee guard every transaction passes before it is signed.
//!
//! The guard's rules, checked in this order, all overridden together by the caller
//! (`--allow-high-fee` on the command line):
//! 1. no transaction pays more than [`MAX_FEE_RATE_SAT_VB`] sat/vB (above the highest rates
//!    the network has seen so far; a typo such as `--fee-rate 2000` for 20 lands here);
//! 2. no transaction pays more than [`MAX_FEE_SATS`] sat (0.01 BTC) in fees;
//! 3. a payment's fee may not exceed [`MAX_FEE_PERCENT`] % of what it pays to others (skipped
//!    when it pays nobody else: a cancellation, a CPFP child, a transfer to oneself).

use bitcoin::{Amount, FeeRate};

use super::Review;

/// The fee rate used when the chain source has no estimate (a fresh regtest chain, a server
/// without enough data), and when none is asked: 2 sat/vB — above the relay floor of
/// Bitcoin Core (1 sat/vB by default) and ckm's former fixed default. A transaction that
/// turns out too slow can be bumped.
pub const FALLBACK_FEE_RATE_SAT_VB: u32 = 2;

/// The lowest fee rate taken from an estimate: 1 sat/vB, Bitcoin Core's default relay floor.
pub const MIN_FEE_RATE_SAT_VB: u32 = 1;

/// Rule 3 of the guard: the fee may be at most this percentage of what is paid to others.
pub const MAX_FEE_PERCENT: u64 = 10;

/// Rule 1 of the guard: the highest fee rate, in sat/vB.
pub const MAX_FEE_RATE_SAT_VB: u64 = 1_000;

/// Rule 2 of the guard: the highest fee, in satoshis (0.01 BTC).
pub const MAX_FEE_SATS: u64 = 1_000_000;

/// Where a fee rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeeRateSource {
    /// Given by the user.
    Given,
    /// The chain source's estimate for confirmation within this many blocks.
    Estimate {
        /// The target.
        target_blocks: u16,
    },
    /// The source had no estimate: [`FALLBACK_FEE_RATE_SAT_VB`].
    Fallback,
}

impl FeeRateSource {
    /// A short description for the review, e.g. `estimate for 6 blocks`.
    pub fn describe(&self) -> String {
        match self {
            FeeRateSource::Given => "given".into(),
            FeeRateSource::Estimate { target_blocks } => {
                format!("estimate for {target_blocks} blocks")
            }
            FeeRateSource::Fallback => {
                format!("no estimate available: fallback {FALLBACK_FEE_RATE_SAT_VB} sat/vB")
            }
        }
    }
}

/// The fee rate to use: the one given, else the estimate (raised to
/// [`MIN_FEE_RATE_SAT_VB`]), else [`FALLBACK_FEE_RATE_SAT_VB`].
pub fn choose_fee_rate(
    given: Option<FeeRate>,
    estimate: Option<FeeRate>,
    target_blocks: u16,
) -> (FeeRate, FeeRateSource) {
    let floor = FeeRate::from_sat_per_vb_u32(MIN_FEE_RATE_SAT_VB);
    match (given, estimate) {
        (Some(rate), _) => (rate, FeeRateSource::Given),
        (None, Some(rate)) => (rate.max(floor), FeeRateSource::Estimate { target_blocks }),
        (None, None) => (
            FeeRate::from_sat_per_vb_u32(FALLBACK_FEE_RATE_SAT_VB),
            FeeRateSource::Fallback,
        ),
    }
}

/// A transaction the fee guard refuses; each names its rule and both numbers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FeeGuardError {
    /// Rule 3.
    #[error("the fee of {fee} sat is more than {MAX_FEE_PERCENT}% of the {paid} sat paid to others (rule: fee at most {MAX_FEE_PERCENT}% of the payment)")]
    ShareOfPayment {
        /// The fee.
        fee: u64,
        /// What the transaction pays to others.
        paid: u64,
    },
    /// Rule 1.
    #[error("the fee rate of {rate:.1} sat/vB is above the ceiling of {MAX_FEE_RATE_SAT_VB} sat/vB (rule: fee rate ceiling)")]
    Rate {
        /// The transaction's fee rate, sat/vB.
        rate: f64,
    },
    /// Rule 2.
    #[error("the fee of {fee} sat is above the ceiling of {MAX_FEE_SATS} sat (rule: absolute fee ceiling)")]
    Absolute {
        /// The fee.
        fee: u64,
    },
}

/// Checks a fee against the guard's three rules; `paid` is what the transaction pays to
/// others (zero for a cancellation, a CPFP child or a transfer to oneself: rule 3 is then
/// skipped).
///
/// # Errors
/// The first rule broken, with both numbers.
pub fn check_fee(fee: Amount, vsize: u64, paid: Amount) -> Result<(), FeeGuardError> {
    let fee_sats = fee.to_sat();
    let rate = fee_sats as f64 / vsize.max(1) as f64;
    if rate > MAX_FEE_RATE_SAT_VB as f64 {
        return Err(FeeGuardError::Rate { rate });
    }
    if fee_sats > MAX_FEE_SATS {
        return Err(FeeGuardError::Absolute { fee: fee_sats });
    }
    if paid > Amount::ZERO
        && fee_sats.saturating_mul(100) > paid.to_sat().saturating_mul(MAX_FEE_PERCENT)
    {
        return Err(FeeGuardError::ShareOfPayment {
            fee: fee_sats,
            paid: paid.to_sat(),
        });
    }
    Ok(())
}

impl Review {
    /// The fee guard on this reviewed transaction (see [`check_fee`]).
    ///
    /// # Errors
    /// As [`check_fee`].
    pub fn check_fee(&self) -> Result<(), FeeGuardError> {
        let paid = self.payments.iter().map(|o| o.amount).sum();
        check_fee(self.fee, self.vsize, paid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_order_with_both_numbers() {
        let sat = Amount::from_sat;
        assert_eq!(check_fee(sat(1_000), 100, sat(10_000)), Ok(()));
        let e = check_fee(sat(1_001), 100, sat(10_000));
        assert_eq!(
            e,
            Err(FeeGuardError::ShareOfPayment {
                fee: 1_001,
                paid: 10_000
            })
        );
        let text = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("1001") && text.contains("10000"), "{text}");
        // Nothing paid to others: only the ceilings.
        assert_eq!(check_fee(sat(50_000), 100, Amount::ZERO), Ok(()));
        let e = check_fee(sat(200_000), 100, Amount::ZERO)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("2000.0") && e.contains("1000 sat/vB"), "{e}");
        assert_eq!(
            check_fee(sat(1_000_001), 10_000, sat(100_000_000)),
            Err(FeeGuardError::Absolute { fee: 1_000_001 })
        );
    }

    #[test]
    fn estimate_then_fallback() {
        let r = FeeRate::from_sat_per_vb_u32;
        assert_eq!(
            choose_fee_rate(Some(r(7)), Some(r(3)), 6),
            (r(7), FeeRateSource::Given)
        );
        assert_eq!(
            choose_fee_rate(None, Some(r(3)), 6),
            (r(3), FeeRateSource::Estimate { target_blocks: 6 })
        );
        assert_eq!(
            choose_fee_rate(None, Some(FeeRate::from_sat_per_kwu(10)), 6).0,
            r(1)
        );
        assert_eq!(
            choose_fee_rate(None, None, 6),
            (r(FALLBACK_FEE_RATE_SAT_VB), FeeRateSource::Fallback)
        );
    }
}
