//! Who a payment pays: a recipient given as `ADDR:AMOUNT`, `ADDR:max` or a BIP-0021 URI
//! (`bitcoin:ADDR?amount=BTC&label=…`), with amounts in satoshis or with a `btc` suffix.
//! Everything is checked here, offline, against the wallet's network before any server is
//! contacted: an address for another network is refused naming both networks.

use std::str::FromStr;

use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Amount, Denomination, Network};

/// The most a single amount can be (21 million BTC).
const MAX_MONEY: Amount = Amount::from_sat(21_000_000 * 100_000_000);

/// How much one recipient receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayAmount {
    /// Exactly this amount.
    Exact(Amount),
    /// Everything left once the other recipients and the fee are paid (no change).
    Max,
}

/// One recipient of a payment, checked against the wallet's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address paid.
    pub address: Address,
    /// How much.
    pub amount: PayAmount,
    /// A label given with it (a BIP-0021 `label`).
    pub label: Option<String>,
}

/// Why a recipient was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecipientError {
    /// Not an address.
    #[error("'{address}' is not a bitcoin address")]
    Address {
        /// As given.
        address: String,
    },
    /// An address of another network.
    #[error("address {address} is for {address_network}, but the wallet is on {wallet_network}")]
    WrongNetwork {
        /// As given.
        address: String,
        /// The network(s) the address is valid on, e.g. `bitcoin` or `testnet/signet`.
        address_network: String,
        /// The wallet's network.
        wallet_network: Network,
    },
    /// The amount could not be read.
    #[error("amount '{amount}' for {address}: {reason}")]
    Amount {
        /// The recipient's address as given.
        address: String,
        /// The amount as given.
        amount: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No amount was given for the address.
    #[error("no amount given for {address}")]
    MissingAmount {
        /// The address as given.
        address: String,
    },
    /// Two amounts were given for one address (e.g. a URI's and a separate one).
    #[error("two amounts given for {address}")]
    TwoAmounts {
        /// The address as given.
        address: String,
    },
    /// A BIP-0021 URI the wallet cannot honour.
    #[error("payment URI '{uri}': {reason}")]
    Uri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// More than one recipient asks for the maximum.
    #[error("only one recipient can take the maximum")]
    SeveralMax,
    /// No recipient at all.
    #[error("a payment needs at least one recipient")]
    NoRecipient,
}

/// Parses an amount: whole satoshis (`150000`, `150000sat`) or bitcoin with a `btc` suffix
/// (`0.0015btc`). Zero and amounts above 21 million BTC are refused.
///
/// # Errors
/// The text is not such an amount (the error names `address`).
pub fn parse_amount(address: &str, text: &str) -> Result<Amount, RecipientError> {
    let bad = |reason: &str| RecipientError::Amount {
        address: address.to_string(),
        amount: text.to_string(),
        reason: reason.to_string(),
    };
    let lower = text.trim().to_ascii_lowercase();
    let amount = if let Some(btc) = lower.strip_suffix("btc") {
        Amount::from_str_in(btc.trim(), Denomination::Bitcoin)
            .map_err(|_| bad("not an amount of bitcoin (at most 8 decimals)"))?
    } else {
        let sats = lower
            .strip_suffix("sats")
            .or_else(|| lower.strip_suffix("sat"))
            .unwrap_or(&lower)
            .trim();
        let sats: u64 = sats
            .parse()
            .map_err(|_| bad("not a whole number of satoshis (or say e.g. 0.001btc)"))?;
        Amount::from_sat(sats)
    };
    if amount == Amount::ZERO {
        return Err(bad("the amount must be positive"));
    }
    if amount > MAX_MONEY {
        return Err(bad("the amount exceeds 21 million BTC"));
    }
    Ok(amount)
}

/// Parses an address and checks it is for `network`; a mismatch names both networks.
///
/// # Errors
/// Not an address, or one of another network.
pub fn parse_address(text: &str, network: Network) -> Result<Address, RecipientError> {
    let unchecked: Address<NetworkUnchecked> =
        Address::from_str(text).map_err(|_| RecipientError::Address {
            address: text.to_string(),
        })?;
    if unchecked.is_valid_for_network(network) {
        return Ok(unchecked.assume_checked());
    }
    let address_network = [
        Network::Bitcoin,
        Network::Testnet,
        Network::Signet,
        Network::Regtest,
    ]
    .into_iter()
    .filter(|n| unchecked.is_valid_for_network(*n))
    .map(|n| n.to_string())
    .collect::<Vec<_>>()
    .join("/");
    Err(RecipientError::WrongNetwork {
        address: text.to_string(),
        address_network,
        wallet_network: network,
    })
}

/// A BIP-0021 URI asking for a payment to `address`: `bitcoin:ADDR[?amount=BTC][&label=…]`
/// (the label percent-encoded), as [`Recipient::parse`] reads it back.
pub fn bip21_uri(address: &Address, amount: Option<Amount>, label: Option<&str>) -> String {
    let mut params = Vec::new();
    if let Some(amount) = amount {
        params.push(format!(
            "amount={}",
            amount.to_string_in(Denomination::Bitcoin)
        ));
    }
    if let Some(label) = label {
        let mut encoded = String::new();
        for b in label.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                encoded.push(char::from(b));
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        params.push(format!("label={encoded}"));
    }
    if params.is_empty() {
        format!("bitcoin:{address}")
    } else {
        format!("bitcoin:{address}?{}", params.join("&"))
    }
}

impl Recipient {
    /// Parses one recipient: `ADDR:AMOUNT`, `ADDR:max`, a `bitcoin:` URI, or a bare `ADDR`
    /// paid `amount` (the separate amount of the older `--to ADDR --amount N` form). An
    /// amount given both ways is refused.
    ///
    /// # Errors
    /// A malformed recipient, an address for another network, a bad or missing amount.
    pub fn parse(
        text: &str,
        amount: Option<Amount>,
        network: Network,
    ) -> Result<Self, RecipientError> {
        let text = text.trim();
        if text
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("bitcoin:"))
        {
            return Self::parse_uri(text, amount, network);
        }
        let (address, given) = match text.rsplit_once(':') {
            Some((a, amt)) => (a, Some(amt)),
            None => (text, None),
        };
        let parsed = parse_address(address, network)?;
        let amount = match (given, amount) {
            (Some(_), Some(_)) => {
                return Err(RecipientError::TwoAmounts {
                    address: address.to_string(),
                })
            }
            (Some(t), None) if t.trim().eq_ignore_ascii_case("max") => PayAmount::Max,
            (Some(t), None) => PayAmount::Exact(parse_amount(address, t)?),
            (None, Some(a)) => PayAmount::Exact(a),
            (None, None) => {
                return Err(RecipientError::MissingAmount {
                    address: address.to_string(),
                })
            }
        };
        Ok(Recipient {
            address: parsed,
            amount,
            label: None,
        })
    }

    /// A BIP-0021 URI: `bitcoin:ADDR[?amount=BTC][&label=…][&message=…]`. Unknown `req-`
    /// parameters are refused (the BIP requires it); other unknown parameters are ignored.
    fn parse_uri(
        text: &str,
        separate: Option<Amount>,
        network: Network,
    ) -> Result<Self, RecipientError> {
        let bad = |reason: String| RecipientError::Uri {
            uri: text.to_string(),
            reason,
        };
        let rest = text.get(8..).unwrap_or_default();
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        if address.is_empty() {
            return Err(bad("it names no address".into()));
        }
        let parsed = parse_address(address, network).map_err(|e| bad(e.to_string()))?;
        let mut amount = None;
        let mut label = None;
        // BIP-0021 percent-encodes (RFC 3986): a '+' is a plus, not a space.
        let query = query.replace('+', "%2B");
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "amount" => {
                    if amount.is_some() {
                        return Err(bad("it gives the amount twice".into()));
                    }
                    let a = Amount::from_str_in(&value, Denomination::Bitcoin)
                        .map_err(|_| bad(format!("amount '{value}' is not an amount of BTC")))?;
                    if a == Amount::ZERO || a > MAX_MONEY {
                        return Err(bad(format!("amount '{value}' is out of range")));
                    }
                    amount = Some(a);
                }
                "label" => label = Some(value.into_owned()),
                k if k.starts_with("req-") => {
                    return Err(bad(format!("it requires '{k}', which ckm does not know")))
                }
                _ => {}
            }
        }
        let amount = match (amount, separate) {
            (Some(_), Some(_)) => {
                return Err(RecipientError::TwoAmounts {
                    address: address.to_string(),
                })
            }
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => {
                return Err(RecipientError::MissingAmount {
                    address: address.to_string(),
                })
            }
        };
        Ok(Recipient {
            address: parsed,
            amount: PayAmount::Exact(amount),
            label,
        })
    }
}

/// Checks a list of recipients: at least one, and at most one taking the maximum.
///
/// # Errors
/// [`RecipientError::NoRecipient`], [`RecipientError::SeveralMax`].
pub fn check_recipients(recipients: &[Recipient]) -> Result<(), RecipientError> {
    if recipients.is_empty() {
        return Err(RecipientError::NoRecipient);
    }
    if recipients
        .iter()
        .filter(|r| r.amount == PayAmount::Max)
        .count()
        > 1
    {
        return Err(RecipientError::SeveralMax);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGTEST: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
    const MAINNET: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
    const TESTNET: &str = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";

    fn parse(text: &str) -> Result<Recipient, RecipientError> {
        Recipient::parse(text, None, Network::Regtest)
    }

    #[test]
    fn bip21_uri_reads_back() {
        let address = parse_address(REGTEST, Network::Regtest).expect("address");
        let uri = bip21_uri(
            &address,
            Some(Amount::from_sat(150_000)),
            Some("rent, März & co"),
        );
        assert!(uri.starts_with("bitcoin:bcrt1q"), "{uri}");
        assert!(uri.contains("amount=0.0015"), "{uri}");
        let back = parse(&uri).expect("parses back");
        assert_eq!(back.address, address);
        assert_eq!(back.amount, PayAmount::Exact(Amount::from_sat(150_000)));
        assert_eq!(back.label.as_deref(), Some("rent, März & co"));
        assert_eq!(
            bip21_uri(&address, None, None),
            format!("bitcoin:{address}")
        );
    }

    #[test]
    fn amounts_in_sats_or_btc() {
        let a = |t| parse_amount("a", t);
        assert_eq!(a("150000"), Ok(Amount::from_sat(150_000)));
        assert_eq!(a("150000sat"), Ok(Amount::from_sat(150_000)));
        assert_eq!(a("0.0015btc"), Ok(Amount::from_sat(150_000)));
        assert_eq!(a("1BTC"), Ok(Amount::from_sat(100_000_000)));
        assert!(a("0").is_err());
        assert!(a("1.5").is_err());
        assert!(a("0.000000001btc").is_err());
        assert!(a("21000001btc").is_err());
        assert!(a("-5").is_err());
    }

    #[test]
    fn address_amount_max_and_the_old_form() {
        let r = parse(&format!("{REGTEST}:0.5btc")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.amount, PayAmount::Exact(Amount::from_sat(50_000_000)));
        let r = parse(&format!("{REGTEST}:max")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.amount, PayAmount::Max);
        let r = Recipient::parse(REGTEST, Some(Amount::from_sat(7)), Network::Regtest)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.amount, PayAmount::Exact(Amount::from_sat(7)));
        assert!(matches!(
            parse(REGTEST),
            Err(RecipientError::MissingAmount { .. })
        ));
        assert!(matches!(
            Recipient::parse(
                &format!("{REGTEST}:5"),
                Some(Amount::ONE_SAT),
                Network::Regtest
            ),
            Err(RecipientError::TwoAmounts { .. })
        ));
    }

    #[test]
    fn other_networks_are_named() {
        let e = parse(&format!("{MAINNET}:1000"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(&*format!(
                "address {MAINNET} is for bitcoin, but the wallet is on regtest"
            ))
        );
        let e = parse(&format!("{TESTNET}:1000"))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("testnet/signet"));
        assert!(matches!(
            parse("nonsense:1000"),
            Err(RecipientError::Address { .. })
        ));
    }

    #[test]
    fn bip21_uris() {
        let r = parse(&format!(
            "bitcoin:{REGTEST}?amount=0.001&label=Luke-Jr%20a+b"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.amount, PayAmount::Exact(Amount::from_sat(100_000)));
        assert_eq!(r.label.as_deref(), Some("Luke-Jr a+b"));
        let r = parse(&format!(
            "BITCOIN:{REGTEST}?message=x&somethingelse=1&amount=1"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.amount, PayAmount::Exact(Amount::from_sat(100_000_000)));
        for bad in [
            format!("bitcoin:{REGTEST}?amount=0.001&req-somethingyoudontunderstand=50"),
            format!("bitcoin:{REGTEST}?amount=abc"),
            format!("bitcoin:{REGTEST}?amount=0"),
            format!("bitcoin:{MAINNET}?amount=1"),
            "bitcoin:?amount=1".to_string(),
        ] {
            assert!(
                matches!(parse(&bad), Err(RecipientError::Uri { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&format!("bitcoin:{REGTEST}")),
            Err(RecipientError::MissingAmount { .. })
        ));
    }

    #[test]
    fn one_max_at_most() {
        let max = parse(&format!("{REGTEST}:max")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            check_recipients(&[max.clone(), max.clone()]),
            Err(RecipientError::SeveralMax)
        );
        assert_eq!(check_recipients(&[]), Err(RecipientError::NoRecipient));
        assert_eq!(check_recipients(&[max]), Ok(()));
    }
}
