//! TLS for the secret server: a self-signed certificate kept in the signer's home (or one the
//! operator supplies; [`super::server::Server::serve`] runs the handshakes, each within its
//! connection slot and timeout), and the coordinator's verifier that pins each signer's
//! certificate by its SHA-256 fingerprint (recorded in the wallet's roster at creation)
//! instead of trusting any CA.

use std::path::Path;
use std::sync::{Arc, Mutex};

use bitcoin::hashes::{sha256, Hash};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use serde::{Deserialize, Serialize};

use crate::identity::{IdentityKey, IdentityPublic};
use crate::store::{read_limited, write_atomic};

/// Signing domain of [`TlsStatement`]s.
const STATEMENT_DOMAIN: &str = "tls-statement";

/// Errors setting TLS up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a certificate or key failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key is malformed.
    #[error("{0}")]
    Malformed(String),
    /// rustls refused the configuration.
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// A statement of a certificate is not signed by the identity it names or expected.
    #[error("the TLS statement is not signed by signer {expected}")]
    BadStatement {
        /// The identity that should have signed it.
        expected: IdentityPublic,
    },
}

/// A server certificate and its private key.
pub struct TlsIdentity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("sha256", &self.fingerprint())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// SHA-256 of a DER certificate, lowercase hex: what coordinators pin.
pub fn fingerprint(cert_der: &[u8]) -> String {
    sha256::Hash::hash(cert_der).to_string()
}

fn crypto() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsIdentity {
    /// The certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.cert.as_ref())
    }

    /// Loads the self-signed certificate kept in `dir`, creating it on first use
    /// (`tls-cert.der`, `tls-key.der`, mode 0600).
    ///
    /// # Errors
    /// File system errors or malformed files.
    pub fn self_signed_in(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join("tls-cert.der");
        let key_path = dir.join("tls-key.der");
        let io = |what, path: &Path| {
            let path = path.display().to_string();
            move |source| TlsError::Io { what, path, source }
        };
        if !cert_path.exists() || !key_path.exists() {
            Self::generate_in(dir)?;
        }
        let cert = read_limited(&cert_path, 1 << 20).map_err(io("cannot read", &cert_path))?;
        let key = zeroize::Zeroizing::new(
            read_limited(&key_path, 1 << 20).map_err(io("cannot read", &key_path))?,
        );
        Ok(TlsIdentity {
            cert: CertificateDer::from(cert),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
        })
    }

    /// Replaces the self-signed certificate kept in `dir` by a new one (new key too) and
    /// returns it. A running server keeps the old one until it restarts.
    ///
    /// # Errors
    /// File system errors.
    pub fn rotate_self_signed_in(dir: &Path) -> Result<Self, TlsError> {
        Self::generate_in(dir)?;
        Self::self_signed_in(dir)
    }

    fn generate_in(dir: &Path) -> Result<(), TlsError> {
        let cert_path = dir.join("tls-cert.der");
        let key_path = dir.join("tls-key.der");
        let io = |what, path: &Path| {
            let path = path.display().to_string();
            move |source| TlsError::Io { what, path, source }
        };
        let generated = rcgen::generate_simple_self_signed(vec![
            "ckm-signer".to_string(),
            "localhost".to_string(),
        ])
        .map_err(|e| TlsError::Malformed(format!("generating a certificate: {e}")))?;
        let key = zeroize::Zeroizing::new(generated.key_pair.serialize_der());
        // Key first: a crash in between leaves a certificate that does not match its key,
        // which the next start refuses (rustls checks the pair) rather than serving.
        write_atomic(&key_path, &key).map_err(io("cannot write", &key_path))?;
        write_atomic(&cert_path, generated.cert.der()).map_err(io("cannot write", &cert_path))?;
        Ok(())
    }

    /// Loads a PEM certificate (the first in the file) and PEM private key.
    ///
    /// # Errors
    /// Unreadable or malformed files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_der = CertificateDer::from_pem_file(cert)
            .map_err(|e| TlsError::Malformed(format!("{}: {e}", cert.display())))?;
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| TlsError::Malformed(format!("{}: {e}", key.display())))?;
        Ok(TlsIdentity {
            cert: cert_der,
            key: key_der,
        })
    }

    /// The rustls server configuration (TLS 1.2 and 1.3, no client certificates: clients are
    /// authenticated by their signed requests).
    ///
    /// # Errors
    /// rustls rejects the key.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let config = ServerConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())?;
        Ok(Arc::new(config))
    }
}

/// Accepts exactly one server certificate, by SHA-256 fingerprint (or, without a pin, any
/// certificate: only to fetch a [`TlsStatement`], which is then checked against what was
/// presented); records the fingerprint presented. Handshake signatures are still checked,
/// so the server must hold the certificate's key.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity.as_ref());
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(got.clone());
        }
        match &self.sha256 {
            Some(pin) if *pin != got => Err(rustls::Error::General(format!(
                "the signer's TLS certificate is not the pinned one: expected sha256 {pin}, \
                 got {got}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The fingerprint of the certificate a server presented last through a client
/// configuration made here (shared with the configuration's verifier).
pub type SeenCertificate = Arc<Mutex<Option<String>>>;

fn parse_pin(sha256_hex: &str) -> Result<String, TlsError> {
    let pin = sha256_hex.to_ascii_lowercase();
    if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TlsError::Malformed(format!(
            "TLS fingerprint '{sha256_hex}' is not a SHA-256 in hex"
        )));
    }
    Ok(pin)
}

fn client_config(pin: Option<String>) -> Result<(ClientConfig, SeenCertificate), TlsError> {
    let provider = crypto();
    let seen = SeenCertificate::default();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            sha256: pin,
            seen: seen.clone(),
            provider,
        }))
        .with_no_client_auth();
    Ok((config, seen))
}

/// A rustls client configuration that trusts only the certificate with this fingerprint.
///
/// # Errors
/// A fingerprint that is not 64 hex characters.
pub fn pinned_client_config(sha256_hex: &str) -> Result<ClientConfig, TlsError> {
    Ok(pinned_client_config_seen(sha256_hex)?.0)
}

/// [`pinned_client_config`], and where the fingerprint the server presented is recorded
/// (to name it when it is not the pinned one).
///
/// # Errors
/// A fingerprint that is not 64 hex characters.
pub fn pinned_client_config_seen(
    sha256_hex: &str,
) -> Result<(ClientConfig, SeenCertificate), TlsError> {
    client_config(Some(parse_pin(sha256_hex)?))
}

/// A client configuration that accepts any certificate and records its fingerprint: only
/// for fetching a [`TlsStatement`], whose signed fingerprint must then equal the recorded
/// one.
///
/// # Errors
/// rustls refuses the configuration.
pub fn recording_client_config() -> Result<(ClientConfig, SeenCertificate), TlsError> {
    client_config(None)
}

/// A signer's statement, signed by its identity key, that its TLS certificate has the
/// fingerprint `tls_sha256`: what lets a coordinator change a pin without taking it on the
/// network's word (`ckm wallet update-pin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsStatement {
    /// The signer's identity key.
    pub identity: IdentityPublic,
    /// SHA-256 of its certificate (hex).
    pub tls_sha256: String,
    /// When the statement was signed (Unix seconds).
    pub issued_unix: u64,
    /// BIP-340 signature by `identity` (hex).
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

fn statement_digest(identity: &IdentityPublic, tls_sha256: &str, issued_unix: u64) -> [u8; 32] {
    use bitcoin::hashes::HashEngine;
    let mut engine = sha256::Hash::engine();
    engine.input(b"ckm/tls-statement/v1");
    engine.input(&identity.to_bytes());
    engine.input(tls_sha256.as_bytes());
    engine.input(&issued_unix.to_be_bytes());
    sha256::Hash::from_engine(engine).to_byte_array()
}

impl TlsStatement {
    /// Signs the statement that `key`'s signer serves the certificate `tls_sha256`.
    pub fn sign(key: &IdentityKey, tls_sha256: &str, issued_unix: u64) -> Self {
        let identity = key.public();
        let tls_sha256 = tls_sha256.to_ascii_lowercase();
        let signature = key
            .sign(
                STATEMENT_DOMAIN,
                &statement_digest(&identity, &tls_sha256, issued_unix),
            )
            .to_vec();
        TlsStatement {
            identity,
            tls_sha256,
            issued_unix,
            signature,
        }
    }

    /// Checks that the statement is `expected`'s and signed by it, and returns its
    /// fingerprint.
    ///
    /// # Errors
    /// [`TlsError::BadStatement`] or a malformed fingerprint.
    pub fn verify(&self, expected: &IdentityPublic) -> Result<&str, TlsError> {
        parse_pin(&self.tls_sha256)?;
        if self.identity != *expected
            || expected
                .verify(
                    STATEMENT_DOMAIN,
                    &statement_digest(&self.identity, &self.tls_sha256, self.issued_unix),
                    &self.signature,
                )
                .is_err()
        {
            return Err(TlsError::BadStatement {
                expected: *expected,
            });
        }
        Ok(&self.tls_sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn statements_verify_only_for_their_signer_and_fingerprint() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let key = IdentityKey::generate(&mut rng);
        let other = IdentityKey::generate(&mut rng);
        let fp = "ab".repeat(32);
        let s = TlsStatement::sign(&key, &fp, 1_700_000_000);
        assert_eq!(s.verify(&key.public()).unwrap(), fp);
        assert!(s.verify(&other.public()).is_err());
        let mut changed = s.clone();
        changed.tls_sha256 = "cd".repeat(32);
        assert!(changed.verify(&key.public()).is_err());
        let mut later = s.clone();
        later.issued_unix += 1;
        assert!(later.verify(&key.public()).is_err());
        // Another signer's statement under this one's name does not verify.
        let mut forged = TlsStatement::sign(&other, &fp, 1_700_000_000);
        forged.identity = key.public();
        assert!(forged.verify(&key.public()).is_err());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<TlsStatement>(&json).unwrap(), s);
    }

    #[test]
    fn rotation_makes_a_new_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = TlsIdentity::self_signed_in(dir.path()).unwrap();
        assert_eq!(
            TlsIdentity::self_signed_in(dir.path())
                .unwrap()
                .fingerprint(),
            first.fingerprint()
        );
        let rotated = TlsIdentity::rotate_self_signed_in(dir.path()).unwrap();
        assert_ne!(rotated.fingerprint(), first.fingerprint());
        assert_eq!(
            TlsIdentity::self_signed_in(dir.path())
                .unwrap()
                .fingerprint(),
            rotated.fingerprint()
        );
        rotated.server_config().unwrap();
    }
}
