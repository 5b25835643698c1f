//! Prepare, commit and abort: the two phases that end a transition. Once every member of the
//! new roster has certified the new state, the coordinator sends every certificate
//! ([`TransitionCoordinator::prepare_request`]); each member checks them all and hands its new
//! share and the record over ([`Participant::prepare`]) for the signer to store *pending*
//! beside its current share. Once every member has prepared, the coordinator records its
//! decision ([`TransitionCoordinator::record`]) and sends commit (the pending epoch becomes
//! current, the old share is erased) — or abort (the pending share is forgotten). Storing,
//! committing and aborting are the signer's, with its store (`signer::transition`).

use std::collections::BTreeMap;

use super::record::check_certificates;
use super::state::{Done, Participant, Prepared, Stage};
use super::{CertifiedTransition, TransitionCoordinator, TransitionError, TransitionRequest};
use crate::protocol::dkg::Certificate;
use crate::protocol::SessionId;

impl Participant {
    /// Checks every new member's certificate and hands over the new share and the record,
    /// for the signer to store as pending.
    ///
    /// # Errors
    /// Another session, not finished, or a missing or bad certificate.
    pub fn prepare(
        self,
        session: SessionId,
        certificates: BTreeMap<u16, Certificate>,
    ) -> Result<Prepared, TransitionError> {
        if session != self.context.session {
            return Err(TransitionError::Session);
        }
        let Stage::Done(done) = self.stage else {
            return Err(TransitionError::Session);
        };
        let Done {
            share,
            state,
            transcript,
            round1,
        } = *done;
        check_certificates(&certificates, &transcript, &state)?;
        Ok(Prepared {
            share,
            record: CertifiedTransition {
                context: self.context,
                round1,
                state,
                certificates,
            },
        })
    }
}

impl TransitionCoordinator {
    /// The prepare request, once every new member certified.
    ///
    /// # Errors
    /// Certificates missing.
    pub fn prepare_request(&self) -> Result<TransitionRequest, TransitionError> {
        let (state, transcript) = self.state.as_ref().ok_or(TransitionError::Session)?;
        check_certificates(&self.certificates, transcript, state)?;
        Ok(TransitionRequest::Prepare {
            session: self.context.session,
            certificates: self.certificates.clone(),
        })
    }

    /// The record, once every certificate is in.
    ///
    /// # Errors
    /// Not finished.
    pub fn record(&self) -> Result<CertifiedTransition, TransitionError> {
        let (state, transcript) = self.state.as_ref().ok_or(TransitionError::Session)?;
        check_certificates(&self.certificates, transcript, state)?;
        Ok(CertifiedTransition {
            context: self.context.clone(),
            round1: self.round1.clone(),
            state: state.clone(),
            certificates: self.certificates.clone(),
        })
    }
}
