//! Session tickets, sealed here with keys the unikernel makes and rotates, shared by every
//! instance, never entering the sandbox: as the host's (host/src/tickets.rs, rustls's ring
//! ticketer there). A ticket is the key's name, a nonce, and the state sealed with
//! ChaCha20-Poly1305 under that key. The previous key still opens tickets after a rotation.

use crate::clock;
use crate::entropy;
use alloc::vec::Vec;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

/// How often the ticket key is replaced, as the host's default (`TICKET_KEY_ROTATION`).
pub const TICKET_KEY_ROTATION_MS: u64 = 6 * 60 * 60 * 1000;
const KEY_NAME: usize = 16;
const NONCE: usize = 12;

struct TicketKey {
    name: [u8; KEY_NAME],
    cipher: ChaCha20Poly1305,
}

impl TicketKey {
    fn random() -> TicketKey {
        let (mut name, mut key) = ([0; KEY_NAME], [0; 32]);
        entropy::fill(&mut name);
        entropy::fill(&mut key);
        TicketKey {
            name,
            cipher: ChaCha20Poly1305::new(&key.into()),
        }
    }
}

pub struct TicketKeys {
    current: TicketKey,
    previous: Option<TicketKey>,
    rotated_at: u64,
    rotation_ms: u64,
}

impl TicketKeys {
    pub fn new(rotation_ms: u64) -> TicketKeys {
        TicketKeys {
            current: TicketKey::random(),
            previous: None,
            rotated_at: clock::unix_millis(),
            rotation_ms,
        }
    }

    fn rotate_if_due(&mut self) {
        let now = clock::unix_millis();
        if now.saturating_sub(self.rotated_at) >= self.rotation_ms {
            self.previous = Some(core::mem::replace(&mut self.current, TicketKey::random()));
            self.rotated_at = now;
        }
    }

    pub fn seal(&mut self, state: &[u8]) -> Option<Vec<u8>> {
        self.rotate_if_due();
        let mut nonce = [0; NONCE];
        entropy::fill(&mut nonce);
        let sealed = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), state)
            .ok()?;
        Some([&self.current.name[..], &nonce, &sealed].concat())
    }

    pub fn open(&mut self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.rotate_if_due();
        let (name, rest) = ticket.split_at_checked(KEY_NAME)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE)?;
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.name == name)?;
        key.cipher.decrypt(Nonce::from_slice(nonce), sealed).ok()
    }

    /// How long a client may keep a ticket: two rotations (a key opens tickets for that long).
    pub fn lifetime_seconds(&self) -> u32 {
        (2 * self.rotation_ms / 1000).min(u32::MAX as u64) as u32
    }
}
