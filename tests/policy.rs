//! Spending policies and the audit log of `ckm` signers, with real processes.
//!
//! For each rule (`max-fee-sats`, `max-fee-rate`, `max-amount-sats`, `daily-limit-sats`,
//! `allow-address`) the policy is set on all three signers of a 2-of-3 wallet with
//! `ckm signer policy set` while they are running; then a PSBT over the limit is refused
//! (non-zero exit, the error names the rule, no output, a `refused` audit record naming the
//! rule and no `signed` record on the refusing signers) and one within the limit is signed
//! (valid under libbitcoinconsensus). `signer policy show --json` shows what was set. Amounts
//! count what leaves the wallet (payments plus fee): a spend whose fee alone exceeds
//! `max-amount-sats` is refused with no fee cap set.
//!
//! The keyed audit chain: `signer audit verify` accepts intact records and names an edited
//! one; a signer whose records were edited refuses to sign, with the reason, until its
//! operator runs `signer state reset`.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/driver.rs"]
mod driver;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use bitcoin::{Address, OutPoint, TxOut};
use cluster::*;

/// A running 2-of-3 cluster with a funded wallet.
struct Setup {
    c: Cluster,
    funding: HashMap<OutPoint, TxOut>,
}

fn setup() -> Result<Setup> {
    let c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    Ok(Setup { c, funding })
}

impl Setup {
    fn pay(&self, to: &Address, sats: u64, sat_per_vb: u32) -> Result<Payment> {
        self.c.pay(&self.funding, to, sats, sat_per_vb)
    }

    /// Freezes the coins `p` spends in the coordinator's wallet, so that a later payment
    /// does not spend them again.
    fn freeze_inputs(&self, p: &Payment) -> Result<()> {
        let mut w = ckm::wallet::CkmWallet::load(&self.c.wallet_path())?;
        for input in &p.psbt.unsigned_tx.input {
            w.freeze(input.previous_output)?;
        }
        Ok(())
    }

    /// `signer policy set --wallet WALLET ARGS…` on every (running) signer; then checks
    /// with `signer policy show --json` that every signer shows `expect` (JSON) under
    /// `field`.
    fn set_policy(&mut self, args: &[&str], field: &str, expect: serde_json::Value) -> Result<()> {
        for (i, s) in self.c.signers.iter_mut().enumerate() {
            ensure!(!s.has_exited()?, "signer {} is not running", i + 1);
            let pid = s.pid();
            let mut all = vec!["signer", "policy", "set", "--wallet", WALLET];
            all.extend_from_slice(args);
            let v = ckm_json(&s.home, &all)?;
            ensure!(json_str(&v, "wallet")? == WALLET, "{v}");
            ensure!(v["policy"][field] == expect, "policy set printed {v}");
            let shown = ckm_json(&s.home, &["signer", "policy", "show", "--wallet", WALLET])?;
            let rows = shown.as_array().context("policy show is not an array")?;
            ensure!(rows.len() == 1, "{shown}");
            ensure!(json_str(&rows[0], "wallet")? == WALLET, "{shown}");
            ensure!(
                rows[0]["policy"][field] == expect,
                "signer {}: policy show says {shown}",
                i + 1
            );
            // Same process: no restart was needed.
            ensure!(s.pid() == pid && !s.has_exited()?);
        }
        Ok(())
    }

    /// Signs `p` (must succeed), checks the transaction and the report; returns the roster
    /// indexes of the signers used.
    fn expect_signed(&self, p: &Payment, name: &str) -> Result<Vec<u16>> {
        let input = self.c.write_psbt(&format!("{name}.psbt"), &p.psbt)?;
        let out = self.c.dir.path().join(format!("{name}.signed.psbt"));
        let v = self.c.sign_ok(&input, &out, &[])?;
        let tx = check_signed(&out, p)?;
        let used = check_report(&self.c, &v, &tx)?;
        ensure!(used.len() == 2, "{v}");
        for &i in &used {
            let records = audit_for(&self.c.signers[usize::from(i) - 1].home, &p.txid())?;
            ensure!(
                records.iter().any(|r| r["kind"] == "signed"),
                "signer {i} signed {name} without a `signed` audit record: {records:?}"
            );
        }
        Ok(used)
    }

    /// Signs `p` (must fail): non-zero exit, the error names `rule`, no output, input
    /// unchanged; only signers in `refusing` (roster indexes) have a `refused: policy RULE`
    /// record for the txid, at least n − t + 1 of them, and no signer has a `signed` record
    /// for it.
    fn expect_refused(&self, p: &Payment, name: &str, rule: &str, refusing: &[u16]) -> Result<()> {
        let input = self.c.write_psbt(&format!("{name}.psbt"), &p.psbt)?;
        let input_bytes = std::fs::read(&input)?;
        let out = self.c.dir.path().join(format!("{name}.signed.psbt"));
        let res = self.c.sign(&input, &out, &[])?;
        ensure!(
            !res.status.success(),
            "{name} was signed despite {rule}: {}",
            String::from_utf8_lossy(&res.stdout)
        );
        let err = json_error(&res)?;
        ensure!(
            err.contains(&format!("policy {rule}")),
            "the error does not name {rule}: {err}"
        );
        ensure!(err.contains("of the 2 required signers"), "{err}");
        ensure!(!out.exists(), "{name}: output written despite the refusal");
        ensure!(
            std::fs::read(&input)? == input_bytes,
            "{name}: input changed"
        );
        let txid = p.txid();
        let prefix = format!("policy {rule}");
        let mut refused = Vec::new();
        for (i, s) in self.c.signers.iter().enumerate() {
            let index = u16::try_from(i + 1)?;
            let records = audit_for(&s.home, &txid)?;
            ensure!(
                !records.iter().any(|r| r["kind"] == "signed"),
                "signer {index} has a `signed` record for refused {name}: {records:?}"
            );
            if records.iter().any(|r| {
                r["kind"] == "refused"
                    && r["detail"].as_str().is_some_and(|o| o.starts_with(&prefix))
            }) {
                ensure!(
                    refusing.contains(&index),
                    "signer {index} refused {name} under {prefix} without that rule"
                );
                refused.push(index);
            }
        }
        // One-round signing asks only the signers it needs: it gives up once fewer than t = 2
        // signers can still sign, i.e. after n − t + 1 = 2 refusals (so every refusing signer
        // when only two have the rule).
        ensure!(
            refused.len() >= 2.min(refusing.len()),
            "only signers {refused:?} recorded refusing {name} under `{prefix}` (rule on {refusing:?})"
        );
        Ok(())
    }
}

/// `signer audit show --json` of a signer home (the command verifies the chain).
fn audit_records(home: &Path) -> Result<Vec<serde_json::Value>> {
    let v = ckm_json(home, &["signer", "audit", "show"])?;
    Ok(v.as_array().context("audit show is not an array")?.clone())
}

/// The audit records of one transaction.
fn audit_for(home: &Path, txid: &str) -> Result<Vec<serde_json::Value>> {
    Ok(audit_records(home)?
        .into_iter()
        .filter(|r| r["txid"] == txid)
        .collect())
}

const ALL: [u16; 3] = [1, 2, 3];

// ---------------------------------------------------------------------------------------
// One test per rule
// ---------------------------------------------------------------------------------------

#[test]
fn policy_max_fee_sats() -> Result<()> {
    let mut s = setup()?;
    let low = s.pay(&foreign_address(), 100_000, 2)?;
    let high = s.pay(&foreign_address(), 100_000, 40)?;
    let (fee_low, fee_high) = (low.fee()?, high.fee()?);
    ensure!(fee_low * 4 < fee_high, "fees {fee_low} / {fee_high}");
    let max = (fee_low + fee_high) / 2;
    s.set_policy(
        &["--max-fee-sats", &max.to_string()],
        "max_fee_sats",
        max.into(),
    )?;
    s.expect_refused(&high, "high-fee", "max-fee-sats", &ALL)?;
    s.expect_signed(&low, "low-fee")?;
    Ok(())
}

#[test]
fn policy_max_fee_rate() -> Result<()> {
    let mut s = setup()?;
    let low = s.pay(&foreign_address(), 100_000, 2)?;
    let high = s.pay(&foreign_address(), 100_000, 25)?;
    s.set_policy(&["--max-fee-rate", "10"], "max_fee_rate", 10.into())?;
    s.expect_refused(&high, "high-rate", "max-fee-rate", &ALL)?;
    s.expect_signed(&low, "low-rate")?;
    Ok(())
}

#[test]
fn policy_max_amount_sats() -> Result<()> {
    let mut s = setup()?;
    let small = s.pay(&foreign_address(), 50_000, 2)?;
    let large = s.pay(&foreign_address(), 300_000, 2)?;
    s.set_policy(
        &["--max-amount-sats", "100000"],
        "max_amount_sats",
        100_000.into(),
    )?;
    s.expect_refused(&large, "large", "max-amount-sats", &ALL)?;
    s.expect_signed(&small, "small")?;
    Ok(())
}

#[test]
fn policy_amounts_count_the_fee() -> Result<()> {
    let mut s = setup()?;
    // A 10 000 sat payment at 400 sat/vB: the fee alone is far above the amount limit, and
    // no fee cap is set. What leaves the wallet is payment plus fee.
    let greedy = s.pay(&foreign_address(), 10_000, 400)?;
    let fee = greedy.fee()?;
    let limit = 30_000u64;
    ensure!(fee > limit, "the fee {fee} does not exceed the limit");
    s.set_policy(
        &["--max-amount-sats", &limit.to_string()],
        "max_amount_sats",
        limit.into(),
    )?;
    s.expect_refused(&greedy, "fee-heavy", "max-amount-sats", &ALL)?;
    // No signer released a share: none has a `signed` record for it (checked above) and the
    // error says why, with the outflow including the fee.
    let mut records = Vec::new();
    for signer in &s.c.signers {
        records.extend(audit_for(&signer.home, &greedy.txid())?);
    }
    let outflow = greedy.amount + fee;
    ensure!(
        !records.is_empty() && records.iter().all(|r| r["outflow_sats"] == outflow),
        "the refusal does not record the outflow {outflow}: {records:?}"
    );
    let modest = s.pay(&foreign_address(), 10_000, 2)?;
    s.expect_signed(&modest, "modest")?;
    Ok(())
}

#[test]
fn policy_daily_limit_sats() -> Result<()> {
    let mut s = setup()?;
    s.set_policy(
        &["--daily-limit-sats", "150000"],
        "daily_limit_sats",
        150_000.into(),
    )?;
    // 100k of 150k: signed.
    let first = s.pay(&foreign_address(), 100_000, 2)?;
    s.expect_signed(&first, "first")?;
    // The payments are never broadcast, so the wallet would pick the first one's coin again:
    // that would make the next one a replacement of the first, which the limit counts once
    // (issue 26). Freezing the coins spent makes each payment spend coins of its own.
    s.freeze_inputs(&first)?;
    // Another 100k within 24 h: refused by every signer — the two that signed the first, and
    // the third too, which reserved the first spend in its round 1 (a reservation counts
    // until it is signed or expires, and the union is by txid, so nothing counts twice).
    let second = s.pay(&foreign_address(), 100_000, 2)?;
    s.expect_refused(&second, "second", "daily-limit-sats", &ALL)?;
    s.freeze_inputs(&second)?;
    // 40k more still fits (100k + 40k + fees <= 150k).
    let small = s.pay(&foreign_address(), 40_000, 2)?;
    s.expect_signed(&small, "third")?;
    Ok(())
}

#[test]
fn policy_allow_address() -> Result<()> {
    let mut s = setup()?;
    let allowed = foreign_address();
    s.set_policy(
        &["--allow-address", &allowed.to_string()],
        "allow_addresses",
        serde_json::json!([allowed.to_string()]),
    )?;
    let other = s.pay(&foreign_address(), 100_000, 2)?;
    s.expect_refused(&other, "elsewhere", "allow-address", &ALL)?;
    let ok = s.pay(&allowed, 100_000, 2)?;
    s.expect_signed(&ok, "allowed")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Audit log tampering
// ---------------------------------------------------------------------------------------

#[test]
fn audit_record_tampering_is_detected_and_stops_signing() -> Result<()> {
    let mut s = setup()?;
    // Signer 3 down: signers 1 and 2 sign every spend, so each has one record per spend.
    s.c.signers[2].kill();
    let payments = (0..3)
        .map(|k| s.pay(&foreign_address(), 20_000 + k * 1_000, 2))
        .collect::<Result<Vec<_>>>()?;
    for (k, p) in payments.iter().enumerate() {
        s.expect_signed(p, &format!("spend{k}"))?;
    }
    let home = s.c.signers[0].home.clone();
    let v = ckm_json(&home, &["signer", "audit", "verify"])?;
    ensure!(v["ok"] == true, "{v}");
    let signed: Vec<serde_json::Value> = audit_records(&home)?
        .into_iter()
        .filter(|r| r["kind"] == "signed")
        .collect();
    ensure!(signed.len() == 3, "{signed:?}");
    for (r, p) in signed.iter().zip(&payments) {
        ensure!(r["txid"] == p.txid(), "{r}");
        ensure!(r["outflow_sats"] == p.amount + p.fee()?, "{r}");
    }
    let edited_seq = signed[1]["seq"].as_u64().context("seq")?;

    // Edit the outflow of the second spend's record directly in SQLite.
    let db = bdk_wallet::rusqlite::Connection::open(home.join("signer").join("signer.db"))?;
    let changed = db.execute(
        "UPDATE audit SET outflow = outflow - 1 WHERE seq = ?1",
        [i64::try_from(edited_seq)?],
    )?;
    ensure!(changed == 1);
    drop(db);

    for cmd in ["verify", "show"] {
        let res = ckm(&home, &["--json", "signer", "audit", cmd])?;
        ensure!(!res.status.success(), "audit {cmd} accepted edited records");
        let err = json_error(&res)?;
        ensure!(
            err.contains(&format!("broken at record {edited_seq}")) && err.contains("MAC"),
            "audit {cmd}: the edited record is not named: {err}"
        );
    }
    // The untouched records of signer 2 still verify.
    let v = ckm_json(&s.c.signers[1].home, &["signer", "audit", "verify"])?;
    ensure!(v["ok"] == true, "{v}");

    // Restarted, signer 1 serves but refuses to sign, saying why; signer 3 is back, so a
    // spend still goes through with signers 2 and 3.
    s.c.signers[0].stop()?;
    s.c.signers[0].launch()?;
    s.c.signers[2].relaunch_same_port(Kind::Honest)?;
    s.c.sync_roster()?;
    ensure!(
        s.c.signers[0]
            .log_text()
            .contains(&format!("broken at record {edited_seq}")),
        "no warning at start: {}",
        s.c.signers[0].log_text()
    );
    let next = s.pay(&foreign_address(), 25_000, 2)?;
    let used = s.expect_signed(&next, "after-edit")?;
    ensure!(
        !used.contains(&1),
        "the signer with edited records signed: {used:?}"
    );
    ensure!(
        s.c.signers[0].log_text().contains("state reset"),
        "signer 1 did not say how to recover: {}",
        s.c.signers[0].log_text()
    );
    // The operator's audited reset brings it back without a restart.
    let v = ckm_json(
        &home,
        &[
            "signer",
            "state",
            "reset",
            "--reason",
            "test: edited record",
        ],
    )?;
    ensure!(v["ok"] == true, "{v}");
    let v = ckm_json(&home, &["signer", "audit", "verify"])?;
    ensure!(v["ok"] == true, "{v}");
    let resets: Vec<serde_json::Value> = audit_records(&home)?
        .into_iter()
        .filter(|r| r["kind"] == "reset")
        .collect();
    ensure!(
        resets.len() == 1
            && resets[0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("re-sealed")),
        "{resets:?}"
    );
    s.c.signers[1].kill();
    let last = s.pay(&foreign_address(), 26_000, 2)?;
    let used = s.expect_signed(&last, "after-reset")?;
    ensure!(used.contains(&1), "{used:?}");
    Ok(())
}

/// Round 1 at signers 1 and 2 for `p`, through the hand-driven coordinator; returns the
/// session and the signing packages for round 2.
fn round_one(
    d: &driver::Driver,
    p: &Payment,
) -> Result<(
    ckm::message::SessionId,
    Vec<frost_secp256k1_tr::SigningPackage>,
)> {
    let session = ckm::message::SessionId::random(&mut rand::thread_rng());
    let mut committed = std::collections::BTreeMap::new();
    for i in [1u16, 2] {
        let c = d.commit(session, &p.psbt, i)?.map_err(|e| anyhow!("{e}"))?;
        committed.insert(i, c);
    }
    let packages = d.packages(&p.psbt, &committed)?;
    Ok((session, packages))
}

#[test]
fn round_two_re_runs_the_policy_and_epoch_checks_of_round_one() -> Result<()> {
    let mut s = setup()?;
    let large = s.pay(&foreign_address(), 300_000, 2)?;
    let mut d = driver::Driver::new(&s.c, WALLET)?;
    // The policy is tightened between the rounds: round 2 refuses, naming the rule.
    let (session, packages) = round_one(&d, &large)?;
    s.set_policy(
        &["--max-amount-sats", "100000"],
        "max_amount_sats",
        100_000.into(),
    )?;
    match d.sign(session, &packages, &Default::default(), 1)? {
        Err(e) => ensure!(e.to_string().contains("max-amount-sats"), "{e}"),
        Ok(_) => bail!("round 2 signed a spend the tightened policy forbids"),
    }
    // A refresh commits between the rounds: round 2 refuses for the epoch.
    let small = s.pay(&foreign_address(), 50_000, 2)?;
    let (session, packages) = round_one(&d, &small)?;
    let v = ckm_json(&s.c.coord, &["wallet", "refresh"])?;
    ensure!(v["epoch"] == 1, "{v}");
    match d.sign(session, &packages, &Default::default(), 2)? {
        Err(e) => ensure!(e.to_string().contains("between the rounds"), "{e}"),
        Ok(_) => bail!("round 2 signed with a share of another epoch"),
    }
    // Asked again at the new epoch, the same spend is signed.
    d.reload(&s.c, WALLET)?;
    s.expect_signed(&small, "small-after-refresh")?;
    Ok(())
}
