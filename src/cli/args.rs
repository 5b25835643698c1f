//! Flags shared by several subcommands, defined once and flattened where needed.

use std::str::FromStr;

use bitcoin::Amount;
use ckm::identity::IdentityPublic;
use ckm::keys::CertPin;
use clap::Args;

/// `--wallet NAME`, shared by every wallet-scoped command.
#[derive(Debug, Args, Clone)]
pub struct WalletArg {
    /// Wallet to use [default: the home's only wallet]
    #[arg(long = "wallet", value_name = "NAME")]
    pub name: Option<String>,
}

/// `--electrum URL`, shared by the commands that talk to the chain.
#[derive(Debug, Args, Clone)]
pub struct ElectrumArg {
    /// Electrum server, e.g. tcp://127.0.0.1:60401 [default: CKM_ELECTRUM, else the wallet's saved server]
    #[arg(long, value_name = "URL")]
    pub electrum: Option<String>,
}

/// `--to ADDR --amount SATS [--fee-rate SAT_PER_VB]`, shared by `wallet send` and `psbt create`.
#[derive(Debug, Args, Clone)]
pub struct PaymentArgs {
    /// Destination address (must be on the wallet's network)
    #[arg(long, value_name = "ADDR")]
    pub to: String,
    /// Amount to pay, in satoshis
    #[arg(long, value_name = "SATS", value_parser = parse_amount)]
    pub amount: Amount,
    /// Fee rate in sat/vB
    #[arg(long, value_name = "SAT_PER_VB", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub fee_rate: u64,
}

fn parse_amount(s: &str) -> Result<Amount, String> {
    let sats: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of satoshis"))?;
    if sats == 0 {
        return Err("the amount must be positive".into());
    }
    if sats > 21_000_000 * 100_000_000 {
        return Err("the amount exceeds 21 million BTC".into());
    }
    Ok(Amount::from_sat(sats))
}

/// A signer given as `URL#PUBKEY`.
#[derive(Debug, Clone)]
pub struct SignerSpec {
    pub url: String,
    pub identity: IdentityPublic,
    pub tls_sha256: Option<CertPin>,
}

pub fn parse_signer(s: &str) -> Result<SignerSpec, String> {
    let (url, key) = s.rsplit_once('#').ok_or_else(|| {
        format!("'{s}' is not URL#PUBKEY or https://…#PUBKEY@TLS_SHA256 (see `ckm id`, `ckm signer tls`)")
    })?;
    let (key, pin) = match key.split_once('@') {
        Some((k, p)) => (k, Some(p.to_ascii_lowercase())),
        None => (key, None),
    };
    let parsed = ckm::net::client::check_url(url).map_err(|e| format!("signer URL {url}: {e}"))?;
    let identity = IdentityPublic::from_str(key).map_err(|e| format!("signer key {key}: {e}"))?;
    match (parsed.scheme(), &pin) {
        ("https", None) => {
            return Err(format!(
                "{url}: an https signer needs its certificate pinned: URL#PUBKEY@TLS_SHA256 \
                 (the fingerprint printed by `ckm signer tls` on the signer)"
            ))
        }
        ("https", Some(p)) => {
            ckm::net::tls::pinned_client_config(p).map_err(|e| e.to_string())?;
        }
        (_, Some(_)) => return Err(format!("{url}: a TLS fingerprint needs an https URL")),
        _ => {}
    }
    let tls_sha256 = pin
        .map(|p| p.parse::<CertPin>().map_err(|e| e.to_string()))
        .transpose()?;
    Ok(SignerSpec {
        url: url.to_string(),
        identity,
        tls_sha256,
    })
}
