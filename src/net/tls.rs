//! TLS for the secret server: a self-signed certificate kept in the signer's home (or one the
//! operator supplies; [`super::server::Server::serve`] runs the handshakes, each within its
//! connection slot and timeout), and the coordinator's verifier that pins each signer's
//! certificate by its SHA-256 fingerprint (recorded in the wallet's roster at creation)
//! instead of trusting any CA.

use std::path::Path;
use std::sync::Arc;

use bitcoin::hashes::{sha256, Hash};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::store::{read_limited, write_atomic};

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
            let generated = rcgen::generate_simple_self_signed(vec![
                "ckm-signer".to_string(),
                "localhost".to_string(),
            ])
            .map_err(|e| TlsError::Malformed(format!("generating a certificate: {e}")))?;
            let key = zeroize::Zeroizing::new(generated.key_pair.serialize_der());
            write_atomic(&key_path, &key).map_err(io("cannot write", &key_path))?;
            write_atomic(&cert_path, generated.cert.der())
                .map_err(io("cannot write", &cert_path))?;
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

/// Accepts exactly one server certificate, by SHA-256 fingerprint; signatures are still
/// checked, so the server must hold the certificate's key.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: String,
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
        if fingerprint(end_entity.as_ref()) == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the signer's TLS certificate is not the pinned one (sha256 {})",
                self.sha256
            )))
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

/// A rustls client configuration that trusts only the certificate with this fingerprint.
///
/// # Errors
/// A fingerprint that is not 64 hex characters.
pub fn pinned_client_config(sha256_hex: &str) -> Result<ClientConfig, TlsError> {
    let pin = sha256_hex.to_ascii_lowercase();
    if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TlsError::Malformed(format!(
            "TLS fingerprint '{sha256_hex}' is not a SHA-256 in hex"
        )));
    }
    let provider = crypto();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            sha256: pin,
            provider,
        }))
        .with_no_client_auth();
    Ok(config)
}
