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

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bdk_wallet::KeychainKind;
use bitcoin::absolute::LockTime;
use bitcoin::bip32::Xpub;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, FeeRate, Network, OutPoint, Psbt, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Txid, Witness,
};
use ckm::auth::{unix_now, RequestAuth};
use ckm::frost::identifier;
use ckm::frost::keys::{secp, GroupPublic};
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::message::{
    self, CoordinatorToSigner, ErrorCode, SessionId, SignerToCoordinator, WalletRef,
};
use ckm::net::{response_digest, signed_path, AUTH_HEADER, MESSAGE_PATH, RESPONSE_HEADER};
use ckm::psbt::SigningSession;
use ckm::signer::home::{group_key_hex, SignerHome};
use ckm::wallet::CkmWallet;
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_ckm");
const PASSPHRASE: &str = "correct horse battery staple";
const NETWORK: Network = Network::Regtest;
const WALLET: &str = "vault";
/// How long a signer may take to unlock its store and start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A `ckm` command with a clean environment (only the passphrase is set).
fn ckm_cmd(home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--home")
        .arg(home)
        .env_remove("CKM_HOME")
        .env_remove("CKM_ELECTRUM")
        .env_remove("RUST_LOG")
        .env("CKM_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null());
    cmd
}

/// Runs `ckm --home HOME ARGS…` to completion.
fn ckm(home: &Path, args: &[&str]) -> Result<Output> {
    ckm_cmd(home)
        .args(args)
        .output()
        .with_context(|| format!("running ckm {args:?}"))
}

/// Runs `ckm --home HOME --json ARGS…`, requires success and parses stdout as JSON.
fn ckm_json(home: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ckm(home, &all)?;
    ensure!(
        out.status.success(),
        "ckm {all:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "ckm {all:?} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn json_str<'a>(v: &'a serde_json::Value, key: &str) -> Result<&'a str> {
    v[key]
        .as_str()
        .ok_or_else(|| anyhow!("no string field {key:?} in {v}"))
}

/// One `ckm signer serve` process (and its home).
struct SignerProc {
    home: PathBuf,
    identity: IdentityPublic,
    allow: String,
    log: PathBuf,
    url: String,
    child: Option<Child>,
    starts: u32,
}

impl SignerProc {
    /// Runs `signer init` in a new home `home` (in parallel with others: see [`init_all`]).
    fn spawn_init(home: &Path) -> Result<Child> {
        ckm_cmd(home)
            .args(["--json", "signer", "init"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning ckm signer init")
    }

    /// Starts `signer serve` on 127.0.0.1:0 for an initialized home and waits until ready.
    fn start(home: &Path, allow_coordinator: &str) -> Result<Self> {
        let identity = SignerHome::public_identity(home)?;
        let mut proc = SignerProc {
            home: home.to_path_buf(),
            identity,
            allow: allow_coordinator.to_string(),
            log: PathBuf::new(),
            url: String::new(),
            child: None,
            starts: 0,
        };
        proc.launch()?;
        Ok(proc)
    }

    fn launch(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "already running");
        self.starts += 1;
        let name = self
            .home
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("signer")
            .to_string();
        self.log = self
            .home
            .with_file_name(format!("{name}.serve{}.log", self.starts));
        let stderr = std::fs::File::create(&self.log)?;
        let mut child = ckm_cmd(&self.home)
            .args([
                "signer",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--allow-coordinator",
                &self.allow,
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .context("spawning ckm signer serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        // The child is owned (and killed on drop) from here on.
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the signer never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            other => bail!(
                "signer {} did not report listening ({other:?}); log:\n{}",
                self.home.display(),
                self.log_text()
            ),
        };
        // `listening on http://ADDR as ID`
        let rest = line
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?;
        let (url, id) = rest
            .split_once(" as ")
            .with_context(|| format!("unexpected first line {line:?}"))?;
        ensure!(
            id.trim() == self.identity.to_string(),
            "signer announced identity {id}, its home says {}",
            self.identity
        );
        ensure!(url.starts_with("http://127.0.0.1:"), "unexpected URL {url}");
        self.url = url.to_string();
        Ok(())
    }

    /// `URL#PUBKEY` for `wallet create --signer`.
    fn spec(&self) -> String {
        format!("{}#{}", self.url, self.identity)
    }

    fn endpoint(&self) -> String {
        format!("{}{MESSAGE_PATH}", self.url)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (as a crash would).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; asserts a clean exit (code 0) within 10 s.
    fn stop(&mut self) -> Result<()> {
        let mut child = self.child.take().context("signer not running")?;
        let pid = child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(
                    status.code() == Some(0),
                    "signer exited with {status} after SIGTERM; log:\n{}",
                    self.log_text()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("signer did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops (SIGTERM) and starts again with the same home, on a new port.
    fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }
}

impl Drop for SignerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Initializes signer homes `s1..=sn` under `dir` in parallel; returns the home paths.
fn init_all(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let homes: Vec<PathBuf> = (1..=n).map(|i| dir.join(format!("s{i}"))).collect();
    let children = homes
        .iter()
        .map(|h| SignerProc::spawn_init(h))
        .collect::<Result<Vec<_>>>()?;
    for (child, home) in children.into_iter().zip(&homes) {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "signer init {} failed: {}",
            home.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(
            json_str(&v, "identity")? == SignerHome::public_identity(home)?.to_string(),
            "signer init printed another identity than the home's"
        );
    }
    Ok(homes)
}

/// A coordinator home, `n` running signers and (once created) a `t`-of-`n` wallet.
/// Field order matters: the processes are killed before the directory is removed.
struct Cluster {
    signers: Vec<SignerProc>,
    coord: PathBuf,
    coord_id: String,
    /// `wallet create --json` output.
    created: serde_json::Value,
    dir: TempDir,
}

impl Cluster {
    /// Starts `n` signers trusting a fresh coordinator, without a wallet.
    fn start(n: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let coord = dir.path().join("coord");
        let coord_id = json_str(&ckm_json(&coord, &["id"])?, "identity")?.to_string();
        let homes = init_all(dir.path(), n)?;
        let signers = homes
            .iter()
            .map(|h| SignerProc::start(h, &coord_id))
            .collect::<Result<Vec<_>>>()?;
        Ok(Cluster {
            signers,
            coord,
            coord_id,
            created: serde_json::Value::Null,
            dir,
        })
    }

    /// Starts `n` signers and runs `wallet create WALLET -t T` across them.
    fn with_wallet(n: usize, t: u16) -> Result<Self> {
        let mut c = Self::start(n)?;
        let t = t.to_string();
        let mut args = vec!["wallet", "create", WALLET, "-t", t.as_str()];
        let specs: Vec<String> = c.signers.iter().map(|s| s.spec()).collect();
        for s in &specs {
            args.push("--signer");
            args.push(s);
        }
        c.created = ckm_json(&c.coord, &args).map_err(|e| {
            let logs: Vec<String> = c.signers.iter().map(|s| s.log_text()).collect();
            e.context(format!("signer logs:\n{}", logs.join("\n---\n")))
        })?;
        Ok(c)
    }

    fn wallet_path(&self) -> PathBuf {
        self.coord.join("wallets").join(format!("{WALLET}.sqlite"))
    }

    /// The coordinator's identity key, read from its home as the CLI stores it (hex).
    fn coordinator_key(&self) -> Result<IdentityKey> {
        let text = std::fs::read_to_string(self.coord.join("identity.key"))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes)?;
        let key = IdentityKey::from_secret_bytes(&bytes)?;
        ensure!(key.public().to_string() == self.coord_id);
        Ok(key)
    }
}

// ---------------------------------------------------------------------------------------
// Wallet funding
// ---------------------------------------------------------------------------------------

/// An address no wallet here owns.
fn foreign_address() -> Address {
    let key = IdentityKey::generate(&mut rand::rngs::OsRng);
    Address::p2tr(secp(), key.public().x_only(), None, NETWORK)
}

fn made_up_funding(script_pubkey: ScriptBuf, sats: u64) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array(rand::random()), 1),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[0u8; 64]]),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(sats),
                script_pubkey,
            },
            TxOut {
                value: Amount::from_sat(12_345),
                script_pubkey: foreign_address().script_pubkey(),
            },
        ],
    }
}

/// Funds to revealed addresses of both keychains: (keychain, index, sats).
const FUNDS: [(KeychainKind, u32, u64); 4] = [
    (KeychainKind::External, 0, 100_000),
    (KeychainKind::External, 2, 200_000),
    (KeychainKind::Internal, 0, 150_000),
    (KeychainKind::Internal, 1, 300_000),
];
/// More than any three of the funding outputs: the payment needs all four.
const PAY_SATS: u64 = 700_000;

/// A PSBT of the cluster's wallet spending all its (made-up) funds.
struct Payment {
    psbt: Psbt,
    funding: HashMap<OutPoint, TxOut>,
    to: Address,
    group: GroupPublic,
}

/// Loads the coordinator's wallet, funds it with unconfirmed made-up transactions, builds a
/// payment that needs every input, persists and closes the wallet.
fn fund_and_build(c: &Cluster) -> Result<Payment> {
    let mut wallet = CkmWallet::load(&c.wallet_path())?;
    for (keychain, index) in [(KeychainKind::External, 2), (KeychainKind::Internal, 1)] {
        wallet
            .bdk_mut()
            .reveal_addresses_to(keychain, index)
            .for_each(drop);
    }
    let mut funding = HashMap::new();
    let mut txs = Vec::new();
    for (keychain, index, sats) in FUNDS {
        let spk = wallet
            .bdk()
            .peek_address(keychain, index)
            .address
            .script_pubkey();
        let tx = made_up_funding(spk, sats);
        funding.insert(OutPoint::new(tx.compute_txid(), 0), tx.output[0].clone());
        txs.push((tx, 1_700_000_000u64));
    }
    wallet.bdk_mut().apply_unconfirmed_txs(txs);
    wallet.persist()?;
    let total: u64 = FUNDS.iter().map(|f| f.2).sum();
    ensure!(wallet.bdk().balance().total() == Amount::from_sat(total));
    let to = foreign_address();
    let psbt = wallet.build_payment(
        &to,
        Amount::from_sat(PAY_SATS),
        FeeRate::from_sat_per_vb_u32(2),
    )?;
    wallet.persist()?;
    ensure!(
        psbt.inputs.len() == FUNDS.len(),
        "the payment spends {} inputs, expected all {}",
        psbt.inputs.len(),
        FUNDS.len()
    );
    let group = wallet.meta().group.clone();
    drop(wallet);
    Ok(Payment {
        psbt,
        funding,
        to,
        group,
    })
}

/// Verifies every input of `tx` with libbitcoinconsensus (Taproot rules) against `funding`.
fn consensus_verify(tx: &Transaction, funding: &HashMap<OutPoint, TxOut>) -> Result<()> {
    let spent: Vec<TxOut> = tx
        .input
        .iter()
        .map(|i| funding.get(&i.previous_output).cloned())
        .collect::<Option<_>>()
        .context("the transaction spends an unknown output")?;
    let tx_bytes = bitcoin::consensus::serialize(tx);
    // The Utxo structs point into `spent`, which outlives them.
    let utxos: Vec<bitcoinconsensus::Utxo> = spent
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    for (index, prev) in spent.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            prev.script_pubkey.as_bytes(),
            prev.value.to_sat(),
            &tx_bytes,
            Some(&utxos),
            index,
            bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT,
        )
        .map_err(|e| anyhow!("input {index}: consensus verification failed: {e:?}"))?;
    }
    Ok(())
}

/// Reads a signed PSBT file, extracts the transaction and checks it against the payment.
fn check_signed(out: &Path, p: &Payment) -> Result<Transaction> {
    let text = std::fs::read_to_string(out)?;
    let signed = Psbt::from_str(text.trim()).context("the output is not a base64 PSBT")?;
    ensure!(
        signed.unsigned_tx == p.psbt.unsigned_tx,
        "the signed PSBT is another transaction"
    );
    let tx = signed.extract_tx()?;
    ensure!(tx.input.len() == FUNDS.len());
    ensure!(tx.input.iter().all(|i| i.witness.len() == 1));
    ensure!(tx
        .output
        .iter()
        .any(|o| o.script_pubkey == p.to.script_pubkey() && o.value.to_sat() == PAY_SATS));
    consensus_verify(&tx, &p.funding)?;
    Ok(tx)
}

fn string_array(v: &serde_json::Value) -> Result<Vec<String>> {
    v.as_array()
        .with_context(|| format!("{v} is not an array"))?
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .with_context(|| format!("{x} is not a string"))
        })
        .collect()
}

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
        group_key: group_key_hex(group),
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
        SignerToCoordinator::SignCommitments { commitments } => {
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
        group_key_hex(&w.meta().group)
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
    let share = CoordinatorToSigner::SignShare { session, packages };

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

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    Ok(out)
}

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
        let group_key = json_str(&list[0], "group_key")?.to_string();
        let home = SignerHome::open(&s.home, PASSPHRASE.as_bytes())?;
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
        // The share file itself exists and decrypts (so the scan looked at the right thing).
        let share_file = SignerHome::dir_of(&s.home)
            .join("wallets")
            .join(format!("{group_key}.share"));
        ensure!(std::fs::metadata(&share_file)?.len() > 32);
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
        &with(&["<NAME>", "--threshold", "-t", "--signer", "--timeout"]),
    )?;
    check_help(
        &["psbt", "sign", "--help"],
        &with(&["<INPUT>", "--out", "--wallet", "--timeout"]),
    )?;
    Ok(())
}
