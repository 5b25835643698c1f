//! Multi-process integration tests of `ckm`: real `ckm signer serve` processes on loopback,
//! driven through the real `ckm` command line and through raw HTTP requests.
//!
//! 1. DKG 2-of-3 through `wallet create`: every signer stores the same group key, which is
//!    the key of the coordinator's descriptor; descriptor and `wallet address` agree.
//! 2. A four-input PSBT co-signed across processes by `psbt sign`, every input verified by
//!    libbitcoinconsensus with the Taproot rules.
//! 3. Signing with one signer dead (succeeds without it) and with two dead (fails clearly,
//!    writes nothing, leaves the input untouched).
//! 4. Request authentication of the signer's HTTP endpoint: missing header, unknown
//!    coordinator, tampered body, replay, request bound to another signer; unknown session.
//! 5. A signer restarted between the two signing rounds refuses round 2.
//! 6. No signing share (nor identity secret) appears in the clear in any file at rest; a wrong
//!    passphrase stops `signer serve` at once.
//! 7. The `--help` of the main commands has an example and describes every flag.
//!
//! The process harness (signers, coordinator, funding, consensus checks) is shared with the
//! other multi-process tests in `common/cluster.rs`.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bitcoin::bip32::Xpub;
use ckm::auth::{unix_now, RequestAuth};
use ckm::frost::identifier;
use ckm::frost::shares::GroupPublic;
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::keys::GroupKey;
use ckm::message::{
    self, CoordinatorToSigner, ErrorCode, SessionId, SignerToCoordinator, WalletRef,
};
use ckm::net::{response_digest, signed_path, AUTH_HEADER, RESPONSE_HEADER};
use ckm::psbt::SigningSession;
use ckm::signer::home::SignerHome;
use ckm::signer::legacy::open_migrating;
use ckm::wallet::CkmWallet;
use cluster::*;
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};

// ---------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------

struct Reply {
    status: u16,
    body: Vec<u8>,
    signature: Option<String>,
}

impl Reply {
    fn message(&self) -> Result<SignerToCoordinator> {
        message::decode(&self.body).with_context(|| {
            format!(
                "HTTP {}: not a signer message: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a 401 whose body is an `unauthorized` error and nothing else.
    fn expect_unauthorized(&self, what: &str) -> Result<()> {
        ensure!(
            self.status == 401,
            "{what}: expected 401, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        match self.message()? {
            SignerToCoordinator::Error {
                code: ErrorCode::Unauthorized,
                ..
            } => Ok(()),
            other => bail!("{what}: 401 with body {other:?}"),
        }
    }
}

fn post(
    http: &reqwest::blocking::Client,
    url: &str,
    auth: Option<&str>,
    body: &[u8],
) -> Result<Reply> {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(a) = auth {
        req = req.header(AUTH_HEADER, a);
    }
    let resp = req.send()?;
    let status = resp.status().as_u16();
    let signature = resp
        .headers()
        .get(RESPONSE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.bytes()?.to_vec();
    Ok(Reply {
        status,
        body,
        signature,
    })
}

/// A request header signed by `key` for the signer `target`.
fn sign_for(key: &IdentityKey, target: &IdentityPublic, body: &[u8]) -> RequestAuth {
    RequestAuth::sign(
        key,
        "POST",
        &signed_path(target),
        body,
        unix_now(),
        &mut rand::rngs::OsRng,
    )
}

/// Sends a correctly signed message to `signer`, checks the answer's signature.
fn send_signed(
    http: &reqwest::blocking::Client,
    key: &IdentityKey,
    signer: &SignerProc,
    msg: &CoordinatorToSigner,
) -> Result<(Reply, RequestAuth, Vec<u8>)> {
    let body = message::encode(msg);
    let auth = sign_for(key, &signer.identity, &body);
    let reply = post(
        http,
        &signer.endpoint(),
        Some(&auth.to_header_value()),
        &body,
    )?;
    if reply.status != 401 {
        let sig = hex::decode(reply.signature.as_deref().context("unsigned answer")?)?;
        signer
            .identity
            .verify(
                "response",
                &response_digest(&auth.signature, &reply.body),
                &sig,
            )
            .map_err(|e| anyhow!("answer not signed by the signer: {e}"))?;
    }
    Ok((reply, auth, body))
}

fn wallet_ref(group: &GroupPublic) -> WalletRef {
    WalletRef {
        name: WALLET.into(),
        group_key: GroupKey::of(group),
        epoch: 0,
    }
}

fn commitments_of(
    reply: &Reply,
    inputs: usize,
) -> Result<Vec<frost_secp256k1_tr::round1::SigningCommitments>> {
    ensure!(
        reply.status == 200,
        "SignCommit: HTTP {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    match reply.message()? {
        SignerToCoordinator::SignCommitments { commitments, .. } => {
            ensure!(
                commitments.len() == inputs,
                "one commitment per input expected"
            );
            Ok(commitments)
        }
        other => bail!("SignCommit answered {other:?}"),
    }
}

/// Asserts a 409 `unknown_session` error without shares.
fn expect_unknown_session(reply: &Reply, what: &str) -> Result<()> {
    ensure!(
        reply.status == 409,
        "{what}: expected 409, got {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    match reply.message()? {
        SignerToCoordinator::Error {
            code: ErrorCode::UnknownSession,
            message,
        } => {
            ensure!(!message.is_empty());
            Ok(())
        }
        other => bail!("{what}: 409 with body {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// 1. DKG through the CLI
// ---------------------------------------------------------------------------------------

#[test]
fn dkg_2_of_3_across_processes() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let created = &c.created;
    ensure!(json_str(created, "wallet")? == WALLET);
    ensure!(created["threshold"] == 2);
    ensure!(created["signers"].as_array().map(Vec::len) == Some(3));

    // Every signer holds a share of the same group, at its own roster index.
    let mut group_keys = Vec::new();
    for (i, s) in c.signers.iter().enumerate() {
        let list = ckm_json(&s.home, &["signer", "wallets"])?;
        let list = list.as_array().context("signer wallets is not an array")?;
        ensure!(list.len() == 1, "signer {} lists {list:?}", i + 1);
        let w = &list[0];
        ensure!(json_str(w, "name")? == WALLET);
        ensure!(w["threshold"] == 2 && w["signers"] == 3);
        ensure!(
            w["index"] == i + 1,
            "signer {} has index {}",
            i + 1,
            w["index"]
        );
        ensure!(json_str(w, "coordinator")? == c.coord_id);
        group_keys.push(json_str(w, "group_key")?.to_string());
    }
    ensure!(
        group_keys.iter().all(|k| *k == group_keys[0]),
        "signers disagree on the group key: {group_keys:?}"
    );

    // The coordinator's wallet is that group's.
    let meta_key = {
        let w = CkmWallet::load(&c.wallet_path())?;
        GroupKey::of(&w.meta().group).to_string()
    };
    ensure!(meta_key == group_keys[0]);

    let desc = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    ensure!(desc["external"] == created["external"]);
    ensure!(desc["internal"] == created["internal"]);
    let external = Descriptor::<DescriptorPublicKey>::from_str(json_str(&desc, "external")?)?;
    let internal = Descriptor::<DescriptorPublicKey>::from_str(json_str(&desc, "internal")?)?;
    // The descriptor's xpub carries the signers' group key.
    let ext_text = json_str(&desc, "external")?;
    let xpub_text = ext_text
        .split(']')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .context("no xpub in the descriptor")?;
    let xpub = Xpub::from_str(xpub_text)?;
    ensure!(xpub.public_key.to_string() == group_keys[0]);

    // `wallet address` hands out the descriptor's addresses, in order.
    for i in 0..6u32 {
        let a = ckm_json(&c.coord, &["wallet", "address"])?;
        ensure!(
            a["index"] == i,
            "address index {} instead of {i}",
            a["index"]
        );
        let expected = external.at_derivation_index(i)?.address(NETWORK)?;
        ensure!(
            json_str(&a, "address")? == expected.to_string(),
            "address {i}: CLI {} vs descriptor {expected}",
            a["address"]
        );
        let change = internal.at_derivation_index(i)?.address(NETWORK)?;
        ensure!(change != expected);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Multi-input PSBT signed across processes
// ---------------------------------------------------------------------------------------

#[test]
fn multi_input_psbt_signed_across_processes() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    let input = c.dir.path().join("pay.psbt");
    let output = c.dir.path().join("pay.signed.psbt");
    std::fs::write(&input, p.psbt.to_string())?;

    let v = ckm_json(
        &c.coord,
        &[
            "psbt",
            "sign",
            input.to_str().context("path")?,
            "--out",
            output.to_str().context("path")?,
        ],
    )?;
    ensure!(v["complete"] == true, "{v}");
    let signers = string_array(&v["signers"])?;
    ensure!(signers.len() == 2, "{v}");
    let roster: Vec<String> = c.signers.iter().map(|s| s.identity.to_string()).collect();
    ensure!(signers.iter().all(|s| roster.contains(s)), "{v}");
    ensure!(signers[0] != signers[1]);

    let tx = check_signed(&output, &p)?;
    ensure!(json_str(&v, "txid")? == tx.compute_txid().to_string());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Dead signers
// ---------------------------------------------------------------------------------------

#[test]
fn signing_with_dead_signers() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    let input = c.dir.path().join("pay.psbt");
    std::fs::write(&input, p.psbt.to_string())?;
    let input_bytes = std::fs::read(&input)?;
    let input_arg = input.to_str().context("path")?.to_string();

    // One of three dead: the other two sign.
    c.signers[0].kill();
    let dead = c.signers[0].identity.to_string();
    let out1 = c.dir.path().join("one-dead.psbt");
    let v = ckm_json(
        &c.coord,
        &[
            "psbt",
            "sign",
            &input_arg,
            "--out",
            out1.to_str().context("path")?,
        ],
    )?;
    ensure!(v["complete"] == true, "{v}");
    let signers = string_array(&v["signers"])?;
    ensure!(signers.len() == 2, "{v}");
    ensure!(!signers.contains(&dead), "the dead signer is listed: {v}");
    check_signed(&out1, &p)?;
    ensure!(std::fs::read(&input)? == input_bytes);

    // Two of three dead: fails clearly and writes nothing.
    c.signers[1].kill();
    let out2 = c.dir.path().join("two-dead.psbt");
    let started = Instant::now();
    let res = ckm(
        &c.coord,
        &[
            "psbt",
            "sign",
            &input_arg,
            "--out",
            out2.to_str().context("path")?,
        ],
    )?;
    let stderr = String::from_utf8_lossy(&res.stderr);
    ensure!(
        !res.status.success(),
        "signing with one live signer succeeded"
    );
    ensure!(
        stderr.contains("of the 2 required signers"),
        "unclear error: {stderr}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(30),
        "failing took {:?}",
        started.elapsed()
    );
    ensure!(!out2.exists(), "the output was written despite the failure");
    ensure!(std::fs::read(&input)? == input_bytes, "the input changed");

    // The same in --json mode: the error is JSON on stderr.
    let res = ckm(
        &c.coord,
        &[
            "--json",
            "psbt",
            "sign",
            &input_arg,
            "--out",
            out2.to_str().context("path")?,
        ],
    )?;
    ensure!(!res.status.success());
    // Log lines (warnings about the dead signers) come first; the error is the last line.
    let stderr = String::from_utf8_lossy(&res.stderr);
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    let err: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("stderr: {stderr}"))?;
    ensure!(json_str(&err, "error")?.contains("of the 2 required signers"));
    ensure!(!out2.exists());
    ensure!(std::fs::read(&input)? == input_bytes);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Request authentication
// ---------------------------------------------------------------------------------------

#[test]
fn signer_http_authentication() -> Result<()> {
    let c = Cluster::with_wallet(2, 2)?;
    let p = fund_and_build(&c)?;
    let key = c.coordinator_key()?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let (s1, s2) = (&c.signers[0], &c.signers[1]);
    let status_body = message::encode(&CoordinatorToSigner::Status);

    // Control: a correctly signed request is answered.
    let (reply, _, _) = send_signed(&http, &key, s1, &CoordinatorToSigner::Status)?;
    ensure!(reply.status == 200, "status: HTTP {}", reply.status);
    match reply.message()? {
        SignerToCoordinator::Status {
            identity, wallets, ..
        } => ensure!(identity == s1.identity && wallets == vec![WALLET.to_string()]),
        other => bail!("status answered {other:?}"),
    }

    // (a) No authentication header.
    post(&http, &s1.endpoint(), None, &status_body)?.expect_unauthorized("no header")?;

    // (b) Signed by a coordinator the signer does not know.
    let stranger = IdentityKey::generate(&mut rand::rngs::OsRng);
    let auth = sign_for(&stranger, &s1.identity, &status_body);
    post(
        &http,
        &s1.endpoint(),
        Some(&auth.to_header_value()),
        &status_body,
    )?
    .expect_unauthorized("unknown coordinator")?;

    // (c) A valid signature over another body.
    let commit = |session| CoordinatorToSigner::SignCommit {
        session,
        wallet: wallet_ref(&p.group),
        psbt: p.psbt.to_string(),
    };
    let signed_body = message::encode(&commit(SessionId::random(&mut rand::rngs::OsRng)));
    let auth = sign_for(&key, &s1.identity, &signed_body);
    let tampered = message::encode(&commit(SessionId::random(&mut rand::rngs::OsRng)));
    ensure!(tampered != signed_body);
    let reply = post(
        &http,
        &s1.endpoint(),
        Some(&auth.to_header_value()),
        &tampered,
    )?;
    reply.expect_unauthorized("tampered body")?;

    // (d) A captured valid SignCommit: answered once, refused when replayed.
    let (reply, auth, body) = send_signed(
        &http,
        &key,
        s1,
        &commit(SessionId::random(&mut rand::rngs::OsRng)),
    )?;
    commitments_of(&reply, p.psbt.inputs.len())?;
    let replay = post(&http, &s1.endpoint(), Some(&auth.to_header_value()), &body)?;
    replay.expect_unauthorized("replayed SignCommit")?;
    ensure!(!String::from_utf8_lossy(&replay.body).contains("commitments"));

    // (e) A request bound to signer 1, sent to signer 2.
    let auth = sign_for(&key, &s1.identity, &status_body);
    post(
        &http,
        &s2.endpoint(),
        Some(&auth.to_header_value()),
        &status_body,
    )?
    .expect_unauthorized("request for another signer")?;
    // ... while the same request, bound to signer 2, is accepted.
    let (reply, _, _) = send_signed(&http, &key, s2, &CoordinatorToSigner::Status)?;
    ensure!(reply.status == 200);

    // SignShare for a session the signer never saw.
    let (reply, _, _) = send_signed(
        &http,
        &key,
        s2,
        &CoordinatorToSigner::SignShare {
            session: SessionId::random(&mut rand::rngs::OsRng),
            packages: Vec::new(),
            statements: Default::default(),
        },
    )?;
    expect_unknown_session(&reply, "SignShare for an unknown session")?;
    ensure!(!String::from_utf8_lossy(&reply.body).contains("shares"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. Restart between rounds
// ---------------------------------------------------------------------------------------

#[test]
fn signer_restart_between_rounds_refuses_round_2() -> Result<()> {
    let mut c = Cluster::with_wallet(2, 2)?;
    let p = fund_and_build(&c)?;
    let key = c.coordinator_key()?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let inputs = p.psbt.inputs.len();

    // Round 1 of session X with both signers.
    let session = SessionId::random(&mut rand::rngs::OsRng);
    let commit = CoordinatorToSigner::SignCommit {
        session,
        wallet: wallet_ref(&p.group),
        psbt: p.psbt.to_string(),
    };
    let mut commitments = BTreeMap::new();
    for (i, s) in c.signers.iter().enumerate() {
        let (reply, _, _) = send_signed(&http, &key, s, &commit)?;
        let index = u16::try_from(i + 1)?;
        commitments.insert(identifier(index)?, commitments_of(&reply, inputs)?);
    }
    let packages = SigningSession::new(&p.psbt, &p.group)?.signing_packages(&commitments)?;
    let share = CoordinatorToSigner::SignShare {
        session,
        packages,
        statements: Default::default(),
    };

    // Signer 1 restarts (clean SIGTERM exit, same home, new process).
    let old_url = c.signers[0].url.clone();
    c.signers[0].restart()?;
    let (reply, _, _) = send_signed(&http, &key, &c.signers[0], &CoordinatorToSigner::Status)?;
    ensure!(
        reply.status == 200,
        "restarted signer (was {old_url}, now {}) does not answer",
        c.signers[0].url
    );

    // Round 2 of X: the restarted signer has forgotten the session...
    let (reply, _, _) = send_signed(&http, &key, &c.signers[0], &share)?;
    expect_unknown_session(&reply, "SignShare after restart")?;
    ensure!(!String::from_utf8_lossy(&reply.body).contains("shares"));

    // ... while the signer that kept running signs the very same packages.
    let (reply, _, _) = send_signed(&http, &key, &c.signers[1], &share)?;
    ensure!(
        reply.status == 200,
        "control SignShare: HTTP {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    match reply.message()? {
        SignerToCoordinator::SignShares { shares } => ensure!(shares.len() == inputs),
        other => bail!("control SignShare answered {other:?}"),
    }
    // A session's nonces are used once.
    let (reply, _, _) = send_signed(&http, &key, &c.signers[1], &share)?;
    expect_unknown_session(&reply, "second SignShare")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 6. Secrets at rest; wrong passphrase
// ---------------------------------------------------------------------------------------

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Fails if any file under `dir` contains one of `needles` (raw bytes, lower and upper hex).
fn assert_absent(dir: &Path, needles: &[(&str, Vec<u8>)]) -> Result<usize> {
    let files = files_under(dir)?;
    for file in &files {
        let bytes = std::fs::read(file)?;
        for (what, secret) in needles {
            let forms = [
                secret.clone(),
                hex::encode(secret).into_bytes(),
                hex::encode_upper(secret).into_bytes(),
            ];
            for form in &forms {
                ensure!(
                    !contains(&bytes, form),
                    "{} contains the {what} in the clear",
                    file.display()
                );
            }
        }
    }
    Ok(files.len())
}

#[test]
fn shares_encrypted_at_rest_and_wrong_passphrase() -> Result<()> {
    let mut c = Cluster::with_wallet(2, 2)?;
    for s in &mut c.signers {
        s.stop()?;
    }
    for s in &c.signers {
        let list = ckm_json(&s.home, &["signer", "wallets"])?;
        let group_key: GroupKey = json_str(&list[0], "group_key")?.parse()?;
        let home = open_migrating(&s.home, PASSPHRASE.as_bytes(), &mut rand::rngs::OsRng)?;
        let share = home.load_share(&group_key)?;
        let secret = share.to_secret_bytes()?;
        let repr: serde_json::Value = serde_json::from_slice(&secret)?;
        let key_package = hex::decode(json_str(&repr, "key_package")?)?;
        let kp = frost_secp256k1_tr::keys::KeyPackage::deserialize(&key_package)?;
        let signing_share = kp.signing_share().serialize();
        ensure!(signing_share.len() == 32);
        ensure!(signing_share == share.root_signing_share().serialize());
        // Positive controls: the scanner finds the share where it is in the clear.
        ensure!(
            contains(&key_package, &signing_share),
            "the key package should embed the signing share"
        );
        ensure!(contains(&secret, hex::encode(&signing_share).as_bytes()));
        let identity_secret = home.identity().secret_bytes().to_vec();
        let needles = [
            ("signing share", signing_share),
            ("key package", key_package),
            ("identity secret", identity_secret),
        ];
        let n = assert_absent(&SignerHome::dir_of(&s.home), &needles)?;
        ensure!(n >= 5, "only {n} files in the signer store");
        // The coordinator holds no secret of the signers either.
        assert_absent(&c.coord, &needles)?;
        // The share itself is stored (so the scan looked at the right thing).
        let stored = share_files(&s.home)?;
        ensure!(
            stored.len() == 1 && stored[0].contains(&group_key.to_string()),
            "{stored:?}"
        );
    }

    // A wrong passphrase stops `signer serve` at once, with a clear message.
    let home = &c.signers[0].home;
    let started = Instant::now();
    let out = ckm_cmd(home)
        .args([
            "signer",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-coordinator",
            &c.coord_id,
        ])
        .env("CKM_PASSPHRASE", "not the passphrase")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "serve with a wrong passphrase succeeded"
    );
    ensure!(stderr.contains("wrong passphrase"), "stderr: {stderr}");
    ensure!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // The same through --passphrase-file.
    let pass_file = c.dir.path().join("wrong.pass");
    std::fs::write(&pass_file, "still wrong\n")?;
    let out = ckm_cmd(home)
        .args([
            "signer",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-coordinator",
            &c.coord_id,
            "--passphrase-file",
            pass_file.to_str().context("path")?,
        ])
        .output()?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 7. Help texts
// ---------------------------------------------------------------------------------------

/// Checks that the help has an example and that every argument and flag in its
/// `Arguments:`/`Options:` sections has a description; and that every `expected` flag is
/// among them.
fn check_help(args: &[&str], expected: &[&str]) -> Result<()> {
    let out = Command::new(BIN).args(args).output()?;
    ensure!(out.status.success(), "{args:?} failed");
    let text = String::from_utf8(out.stdout)?;
    ensure!(text.contains("Example"), "{args:?}: no example:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    let mut in_section = false;
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if *line == "Arguments:" || *line == "Options:" {
            in_section = true;
            continue;
        }
        if !in_section || !line.starts_with("  ") {
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent > 6 || !(trimmed.starts_with('-') || trimmed.starts_with('<')) {
            continue;
        }
        // An entry: "  -t, --threshold <T>  description" or with the description below.
        let (head, inline) = match trimmed.split_once("  ") {
            Some((h, d)) => (h, d.trim()),
            None => (trimmed, ""),
        };
        let below: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| {
                let t = l.trim_start();
                // Descriptions are indented deeper than any entry (entries: 2 or 6 spaces).
                t.is_empty() || l.len() - t.len() > 6
            })
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('['))
            .collect();
        ensure!(
            !inline.is_empty() || !below.is_empty(),
            "{args:?}: {head} has no description"
        );
        found.push(head.to_string());
    }
    for flag in expected {
        ensure!(
            found.iter().any(|h| h
                .split([',', ' '])
                .any(|w| w.trim_end_matches("...") == *flag)),
            "{args:?}: {flag} is not described (found {found:?})"
        );
    }
    Ok(())
}

#[test]
fn help_texts_have_examples_and_describe_every_flag() -> Result<()> {
    let global = ["--home", "--network", "--json", "--verbose", "--help"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        extra.iter().chain(global.iter()).copied().collect()
    };
    check_help(
        &["signer", "serve", "--help"],
        &with(&["--listen", "--allow-coordinator", "--passphrase-file"]),
    )?;
    check_help(
        &["wallet", "create", "--help"],
        &with(&[
            "<NAME>",
            "--threshold",
            "-t",
            "--signer",
            "--timeout",
            "--bitcoind",
            "--electrum",
            "--birth-height",
        ]),
    )?;
    check_help(
        &["psbt", "sign", "--help"],
        &with(&["<INPUT>", "--out", "--wallet", "--timeout"]),
    )?;
    let chain = [
        "--electrum",
        "--bitcoind",
        "--bitcoind-cookie",
        "--bitcoind-user",
        "--bitcoind-pass-file",
        "--bitcoind-allow-insecure",
        "--bitcoind-timeout",
        "--birth-height",
    ];
    check_help(&["wallet", "sync", "--help"], &with(&chain))?;
    check_help(&["wallet", "chain", "set", "--help"], &with(&chain))?;
    Ok(())
}
