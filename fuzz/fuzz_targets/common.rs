//! A fixed 2-of-3 group and a signer home holding its first share, built once per process.
#![allow(dead_code)]

use std::sync::OnceLock;

use ckm::frost::pedersen::{run_in_memory, DkgParams};
use ckm::frost::shares::KeyShare;
use ckm::identity::IdentityPublic;
use ckm::keys::GroupKey;
use ckm::signer::home::{SignerHome, WalletInfo};
use ckm::signer::Signer;
use ckm::store::KdfParams;
use rand::SeedableRng;

pub struct Fixture {
    pub shares: Vec<KeyShare>,
    pub signer: Signer,
    pub coordinator: IdentityPublic,
    _dir: tempfile::TempDir,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let shares = run_in_memory(DkgParams::new(2, 3).expect("params"), &mut rng).expect("dkg");
        let dir = tempfile::tempdir().expect("tempdir");
        let home = SignerHome::init(dir.path(), b"fuzz", KdfParams::fast_for_tests(), &mut rng)
            .expect("home");
        let coordinator = ckm::identity::IdentityKey::generate(&mut rng).public();
        let group = shares[0].group();
        let info = WalletInfo {
            name: "fuzz".into(),
            network: bitcoin::Network::Regtest,
            group_key: GroupKey::of(group),
            coordinator,
            threshold: 2,
            signers: 3,
            index: 1,
            fingerprint: None,
            keygen: None,
            epoch: 0,
            transitions: Vec::new(),
        };
        home.save_share(&info, &shares[0], &mut rng).expect("save");
        let signer = Signer::new(home).expect("signer");
        Fixture {
            shares,
            signer,
            coordinator,
            _dir: dir,
        }
    })
}
