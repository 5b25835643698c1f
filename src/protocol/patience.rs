//! Patience: how long the coordinator's ROAST driver lets a session's slower members answer
//! before a member that already answered may join another session.
//!
//! ROAST makes a signer that answered (valid shares, fresh commitments) ready again at once
//! and starts a new session as soon as `t` signers are ready. That is what lets it finish
//! whatever `n − t` faulty signers do, with no timeout; but with honest signers whose answers
//! merely arrive a little apart it also starts a session nobody needs: the faster member and a
//! spare sign again (a decision, an audit record and a nonce each), and the coordinator drops
//! that work when the slower answer completes the first session. Measured with 300 honest
//! 1-input 2-of-3 signings on 2 cores, 114 (38 %) started such a second session
//! (`docs/BENCHMARKS.md`, run 6).
//!
//! With [`Held`], a member that answered a session which can still complete is held back until
//! the session's patience has run out: as long again as a share ([`Patience::percent`]) of the
//! time the session's first answer took, within [`Patience::min`] and [`Patience::max`]. A
//! session that can no longer complete (a member refused, failed or sent invalid shares)
//! releases its held members at once, so those faults cost nothing more than before; only a
//! member that is slow or hangs without failing costs the wait, once per session. ROAST's bound
//! (at most `n − t + 1` sessions) is untouched: sessions start later, never more of them.
//!
//! Transport-free: the caller passes the time of each event.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::SessionId;

/// How long a session's answered members wait for its other members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// The wait after the session's first answer, as a percentage of the time that answer
    /// took from the session's start.
    pub percent: u32,
    /// The shortest wait.
    pub min: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Patience {
    /// Half the first answer's time, at least 2 ms, at most 1 s: on one machine the honest
    /// partner's answer is rarely later, and across a WAN a hanging member costs a session
    /// half a round trip more.
    pub const DEFAULT: Patience = Patience {
        percent: 50,
        min: Duration::from_millis(2),
        max: Duration::from_secs(1),
    };

    /// No wait: plain ROAST (a member is ready again as soon as its shares are checked).
    pub const NONE: Patience = Patience {
        percent: 0,
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// The wait after a first answer that took `first`.
    pub fn wait(&self, first: Duration) -> Duration {
        let scaled = first
            .checked_mul(self.percent)
            .map_or(self.max, |d| d / 100);
        scaled.max(self.min).min(self.max)
    }
}

impl Default for Patience {
    fn default() -> Self {
        Patience::DEFAULT
    }
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    started: Instant,
    first_answer: Option<Instant>,
}

/// The members held back, and the sessions' clocks.
#[derive(Debug, Default)]
pub struct Held {
    patience: Patience,
    clocks: BTreeMap<SessionId, Clock>,
    held: BTreeMap<u16, SessionId>,
}

impl Held {
    /// Nothing held yet; sessions wait as `patience` says.
    pub fn new(patience: Patience) -> Self {
        Held {
            patience,
            clocks: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// `session`'s requests left at `at`.
    pub fn started(&mut self, session: SessionId, at: Instant) {
        self.clocks.entry(session).or_insert(Clock {
            started: at,
            first_answer: None,
        });
    }

    /// A member of `session` answered at `at` (only the first answer counts).
    pub fn answered(&mut self, session: &SessionId, at: Instant) {
        if let Some(clock) = self.clocks.get_mut(session) {
            clock.first_answer.get_or_insert(at);
        }
    }

    /// When the patience of `session` runs out (`None`: no answer yet, or unknown session).
    pub fn deadline(&self, session: &SessionId) -> Option<Instant> {
        let clock = self.clocks.get(session)?;
        let first = clock.first_answer?;
        let took = first.saturating_duration_since(clock.started);
        Some(first + self.patience.wait(took))
    }

    /// `signer` answered `session` with valid shares at `now`: whether it is held back (the
    /// session, `live`, may still complete and its patience has not run out). If not, the
    /// caller makes it ready.
    pub fn hold(&mut self, signer: u16, session: SessionId, live: bool, now: Instant) -> bool {
        let waiting = live && self.deadline(&session).is_some_and(|d| d > now);
        if waiting {
            self.held.insert(signer, session);
        }
        waiting
    }

    /// Whether `signer` is held back.
    pub fn is_held(&self, signer: u16) -> bool {
        self.held.contains_key(&signer)
    }

    /// Releases, at `now`, the members whose session can no longer complete (`live` says)
    /// or whose patience has run out; returns them (in roster order).
    pub fn release(&mut self, now: Instant, live: impl Fn(&SessionId) -> bool) -> Vec<u16> {
        let due: Vec<u16> = self
            .held
            .iter()
            .filter(|(_, s)| !live(s) || self.deadline(s).is_none_or(|d| d <= now))
            .map(|(i, _)| *i)
            .collect();
        for i in &due {
            self.held.remove(i);
        }
        due
    }

    /// Releases every held member (nothing is in flight any more).
    pub fn release_all(&mut self) -> Vec<u16> {
        std::mem::take(&mut self.held).into_keys().collect()
    }

    /// The earliest time a held member is due (`None`: nobody is held).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.values().filter_map(|s| self.deadline(s)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(b: u8) -> SessionId {
        SessionId([b; 16])
    }

    #[test]
    fn the_wait_scales_with_the_first_answer_within_its_bounds() {
        let p = Patience::DEFAULT;
        assert_eq!(p.wait(Duration::from_millis(1)), Duration::from_millis(2));
        assert_eq!(
            p.wait(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(p.wait(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(Patience::NONE.wait(Duration::from_secs(5)), Duration::ZERO);
    }

    /// A member of a live session waits until the session's patience runs out; a session
    /// that can no longer complete releases its members at once.
    #[test]
    fn members_wait_for_a_live_session_and_leave_a_dead_one_at_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (a, b) = (session(1), session(2));
        let mut held = Held::new(Patience::DEFAULT);
        held.started(a, t0);
        held.started(b, t0);
        // Session a: first answer after 10 ms, so its members wait until 15 ms.
        held.answered(&a, t0 + ms(10));
        held.answered(&a, t0 + ms(12));
        assert_eq!(held.deadline(&a), Some(t0 + ms(15)));
        assert!(held.hold(1, a, true, t0 + ms(10)));
        assert!(held.hold(2, a, true, t0 + ms(12)));
        // A dead session, or one past its patience, holds nobody.
        assert!(!held.hold(3, a, false, t0 + ms(12)));
        assert!(!held.hold(3, a, true, t0 + ms(15)));
        // No answer yet: no deadline, so nobody is held for it.
        assert!(!held.hold(4, b, true, t0 + ms(12)));
        assert_eq!(held.next_deadline(), Some(t0 + ms(15)));
        assert!(held.release(t0 + ms(14), |_| true).is_empty());
        assert!(held.is_held(1) && held.is_held(2));
        assert_eq!(held.release(t0 + ms(15), |_| true), vec![1, 2]);
        assert_eq!(held.next_deadline(), None);

        // Held again, then the session dies (a member sent invalid shares): released at once.
        assert!(held.hold(2, a, true, t0 + ms(13)));
        assert_eq!(held.release(t0 + ms(13), |s| *s != a), vec![2]);
        assert!(!held.is_held(2));
    }

    #[test]
    fn no_patience_holds_nobody_and_release_all_empties() {
        let t0 = Instant::now();
        let a = session(7);
        let mut plain = Held::new(Patience::NONE);
        plain.started(a, t0);
        plain.answered(&a, t0 + Duration::from_millis(3));
        assert!(!plain.hold(1, a, true, t0 + Duration::from_millis(3)));

        let mut held = Held::new(Patience::DEFAULT);
        held.started(a, t0);
        held.answered(&a, t0 + Duration::from_millis(3));
        assert!(held.hold(1, a, true, t0 + Duration::from_millis(3)));
        assert!(held.hold(3, a, true, t0 + Duration::from_millis(4)));
        assert_eq!(held.release_all(), vec![1, 3]);
        assert!(!held.is_held(1));
    }
}
