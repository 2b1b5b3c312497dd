//! The session-ticket keys every guest instance shares: made and rotated by rustls's own
//! `TicketRotator` here in the host, so a returning client resumes on whichever instance it lands,
//! and the keys never enter the sandbox.

use rustls::TicketRotator;
use rustls::crypto::GetRandomFailed;
use rustls::crypto::ring::Ticketer;
use rustls::server::ProducesTickets;
use std::sync::Arc;
use std::time::Duration;

/// How often the ticket key is replaced, as rustls's own ticketer does; the previous key still
/// opens tickets, so a ticket lives between one and two of these.
pub const TICKET_KEY_ROTATION: Duration = Duration::from_secs(6 * 60 * 60);

/// Seals and opens session tickets; rotates its key every `rotation`.
#[derive(Debug)]
pub struct TicketKeys(TicketRotator);

impl TicketKeys {
    pub fn new(rotation: Duration) -> TicketKeys {
        let seconds = rotation.as_secs().clamp(1, u32::MAX as u64 / 2) as u32;
        // The system's randomness failing leaves nothing to seal with: there is no sane fallback.
        TicketKeys(
            TicketRotator::new(seconds, one_key).expect("the system random generator failed"),
        )
    }

    pub fn seal(&self, state: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(state)
    }

    pub fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(ticket)
    }

    /// How long a client may keep a ticket: two rotations.
    pub fn lifetime_seconds(&self) -> u32 {
        self.0.lifetime()
    }
}

/// One ticket key: rustls's ring ticketer (ChaCha20-Poly1305, a random key and key name). It
/// rotates too, but every 6 hours, so within one `TicketKeys` rotation it is a single key.
fn one_key() -> Result<Box<dyn ProducesTickets>, GetRandomFailed> {
    Ticketer::new()
        .map(|ticketer| Box::new(Shared(ticketer)) as Box<dyn ProducesTickets>)
        .map_err(|_| GetRandomFailed)
}

#[derive(Debug)]
struct Shared(Arc<dyn ProducesTickets>);

impl ProducesTickets for Shared {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.0.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn a_ticket_opens_with_its_keys_and_not_after_tampering() {
        let keys = TicketKeys::new(TICKET_KEY_ROTATION);
        let ticket = keys.seal(b"state").unwrap();
        assert_eq!(keys.open(&ticket).unwrap(), b"state");
        let mut tampered = ticket.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(keys.open(&tampered), None);
        assert_eq!(
            TicketKeys::new(TICKET_KEY_ROTATION).open(&ticket),
            None,
            "another host's keys"
        );
        assert_eq!(keys.lifetime_seconds(), 12 * 60 * 60);
    }

    /// The race the hand-written rotator had: many connections sealing at once when the key is due
    /// each rotated it, so the previous key (and every ticket sealed with it) was lost at once.
    /// One rotation must happen, however many seal together.
    #[test]
    fn many_seals_at_a_rotation_rotate_once_and_older_tickets_still_open() {
        let keys = Arc::new(TicketKeys::new(Duration::from_secs(1)));
        let before = keys.seal(b"before the rotation").unwrap();
        // Rotation is due once the clock's second has passed the one it was set for.
        std::thread::sleep(Duration::from_millis(2100));
        let threads = 16;
        let barrier = Arc::new(Barrier::new(threads));
        let sealers: Vec<_> = (0..threads)
            .map(|_| {
                let (keys, barrier) = (keys.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    keys.seal(b"at the rotation").unwrap()
                })
            })
            .collect();
        for sealer in sealers {
            assert!(keys.open(&sealer.join().unwrap()).is_some());
        }
        assert_eq!(
            keys.open(&before).as_deref(),
            Some(&b"before the rotation"[..]),
            "the previous key was rotated out twice"
        );
    }
}
