//! The I/O shell around the core: the signer's HTTP server ([`server`]), the coordinator's
//! HTTP client ([`client`]) and the coordinator's protocol drivers ([`coordinator`]) for DKG
//! and PSBT co-signing across signer processes.
//!
//! Every request is a [`crate::message::Versioned`] JSON body signed by the coordinator's
//! identity key (header [`AUTH_HEADER`], bound to the target signer's identity, a fresh nonce
//! and a timestamp); every answer is signed by the signer (header [`RESPONSE_HEADER`]),
//! binding it to the request.

pub mod client;
pub mod coordinator;
pub mod electrum;
pub mod one_round;
pub mod server;
pub mod tls;

use bitcoin::hashes::{sha256, Hash, HashEngine};

use crate::identity::IdentityPublic;

/// Request authentication header.
pub const AUTH_HEADER: &str = "x-ckm-auth";
/// Response signature header.
pub const RESPONSE_HEADER: &str = "x-ckm-signer-signature";
/// The one protocol endpoint.
pub const MESSAGE_PATH: &str = "/v1/message";
/// Largest request or response body accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// The path string a request signs: the endpoint bound to the target signer, so a request
/// captured on its way to one signer cannot be replayed to another.
pub fn signed_path(signer: &IdentityPublic) -> String {
    format!("{MESSAGE_PATH}#{signer}")
}

/// What a signer signs in its answer: the request's signature and the response body.
pub fn response_digest(request_signature: &[u8; 64], body: &[u8]) -> [u8; 32] {
    let mut engine = sha256::Hash::engine();
    engine.input(request_signature);
    engine.input(body);
    sha256::Hash::from_engine(engine).to_byte_array()
}
