//! A deliberately faulty co-signer for fault tests: a real signer process (real home, real
//! share, real HTTP server) that misbehaves in one chosen way. Never use it for anything else.
//!
//! Usage: faulty_signer --home DIR --listen ADDR --allow-coordinator PUBKEY --fault MODE
//! (passphrase from CKM_PASSPHRASE). MODE is one of:
//! - `corrupt-share`: returns an altered signature share for input 0
//! - `die-before-round2`: answers round 1 (or preprocessing), then exits when asked for
//!   shares
//! - `hang`: never answers signing requests (nor preprocessing)
//! - `hang-after-commit`: answers round 1 and preprocessing, never answers a request for
//!   shares (two-round round 2 or one-round signing)
//! - `slow:MS`: waits MS milliseconds before every signing answer
//! - `slow-preprocess:MS`: honest, but waits MS milliseconds before answering preprocessing
//! - `no-one-round`: honest, but refuses one-round signing requests as malformed, as a signer
//!   of a ckm version that cannot read them does

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::message::{CoordinatorToSigner, SignerToCoordinator};
use ckm::net::server::{serve, Handler};
use ckm::signer::legacy::open_migrating;
use ckm::signer::Signer;
use frost_secp256k1_tr::round2::SignatureShare;

#[derive(Clone, Copy)]
enum Fault {
    CorruptShare,
    DieBeforeRound2,
    Hang,
    HangAfterCommit,
    Slow(u64),
    SlowPreprocess(u64),
    NoOneRound,
}

struct Faulty {
    inner: Signer,
    fault: Fault,
}

impl Handler for Faulty {
    fn handle(&self, from: &IdentityPublic, message: CoordinatorToSigner) -> SignerToCoordinator {
        let shares = matches!(
            message,
            CoordinatorToSigner::SignShare { .. } | CoordinatorToSigner::SignPreprocessed { .. }
        );
        let signing = shares
            || matches!(
                message,
                CoordinatorToSigner::SignCommit { .. } | CoordinatorToSigner::Preprocess { .. }
            );
        match self.fault {
            Fault::NoOneRound
                if matches!(message, CoordinatorToSigner::SignPreprocessed { .. }) =>
            {
                return SignerToCoordinator::Error {
                    code: ckm::message::ErrorCode::BadRequest,
                    message: "malformed message: unknown field `commitments`".into(),
                };
            }
            Fault::Hang if signing => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Fault::HangAfterCommit if shares => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Fault::Slow(ms) if signing => std::thread::sleep(Duration::from_millis(ms)),
            Fault::SlowPreprocess(ms)
                if matches!(message, CoordinatorToSigner::Preprocess { .. }) =>
            {
                std::thread::sleep(Duration::from_millis(ms))
            }
            Fault::DieBeforeRound2 if shares => {
                eprintln!("faulty_signer: dying before round 2");
                std::process::exit(3);
            }
            _ => {}
        }
        let reply = Handler::handle(&self.inner, from, message);
        match (self.fault, reply) {
            (Fault::CorruptShare, SignerToCoordinator::SignShares { mut shares }) => {
                corrupt(&mut shares);
                SignerToCoordinator::SignShares { shares }
            }
            (
                Fault::CorruptShare,
                SignerToCoordinator::SignedPreprocessed {
                    mut shares,
                    fresh,
                    mut more,
                },
            ) => {
                corrupt(&mut shares);
                for m in &mut more {
                    corrupt(m);
                }
                SignerToCoordinator::SignedPreprocessed {
                    shares,
                    fresh,
                    more,
                }
            }
            (_, reply) => reply,
        }
    }

    fn identity_key(&self) -> &IdentityKey {
        Handler::identity_key(&self.inner)
    }
}

/// Alters the share of input 0.
fn corrupt(shares: &mut [SignatureShare]) {
    if let Some(first) = shares.first_mut() {
        let mut bytes = first.serialize();
        if let Some(last) = bytes.last_mut() {
            *last ^= 1;
        }
        if let Ok(bad) = SignatureShare::deserialize(&bytes) {
            *first = bad;
        }
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut home, mut listen, mut allowed, mut fault) = (None, None, Vec::new(), None);
    let mut peers = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--home" => home = Some(value),
            "--listen" => listen = Some(value),
            "--allow-coordinator" => allowed.push(value.parse::<IdentityPublic>()?),
            "--allow-peer" => peers.push(value.parse::<IdentityPublic>()?),
            "--fault" => {
                fault = Some(match value.as_str() {
                    "corrupt-share" => Fault::CorruptShare,
                    "die-before-round2" => Fault::DieBeforeRound2,
                    "hang" => Fault::Hang,
                    "hang-after-commit" => Fault::HangAfterCommit,
                    "no-one-round" => Fault::NoOneRound,
                    other => match (
                        other.strip_prefix("slow:"),
                        other.strip_prefix("slow-preprocess:"),
                    ) {
                        (Some(ms), _) => Fault::Slow(ms.parse()?),
                        (_, Some(ms)) => Fault::SlowPreprocess(ms.parse()?),
                        _ => bail!("unknown fault {other}"),
                    },
                })
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let home = home.ok_or_else(|| anyhow!("--home is required"))?;
    let listen = listen.unwrap_or_else(|| "127.0.0.1:0".into());
    let fault = fault.ok_or_else(|| anyhow!("--fault is required"))?;
    let passphrase = std::env::var("CKM_PASSPHRASE").context("CKM_PASSPHRASE")?;
    let inner = Signer::new(
        open_migrating(home.as_ref(), passphrase.as_bytes(), &mut rand::rngs::OsRng)?,
        std::sync::Arc::new(|| Box::new(rand::rngs::OsRng)),
    )?
    .with_peers(peers);
    let identity = inner.identity();
    let handler: Arc<dyn Handler> = Arc::new(Faulty { inner, fault });
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!(
            "listening on http://{} as {identity}",
            listener.local_addr()?
        );
        serve(listener, handler, allowed, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        Ok(())
    })
}
