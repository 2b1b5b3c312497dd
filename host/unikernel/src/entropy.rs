//! Randomness from the CPU: RDRAND for every draw (ServerHello randoms, ephemeral keys, ticket
//! keys), checked at boot. Without it the unikernel refuses to serve: there is no other source.
//! RDSEED is looked for and reported; RDRAND is what is drawn from (qemu's TCG has no RDSEED).

use core::arch::x86_64::{__cpuid, __cpuid_count};
use x86_64::instructions::random::RdRand;

#[derive(Debug, thiserror::Error)]
pub enum EntropyError {
    #[error("the CPU has no RDRAND (qemu: -cpu max)")]
    NoRdrand,
    /// RDRAND answered, but the same value twice in a row, or never succeeded.
    #[error("RDRAND does not draw random numbers")]
    RdrandBroken,
}

/// What the CPU offers, checked once: RDRAND present and drawing. Says whether RDSEED is there.
pub fn check() -> Result<Rdseed, EntropyError> {
    let (leaf1, leaf7) = (__cpuid(1), __cpuid_count(7, 0));
    if leaf1.ecx & (1 << 30) == 0 {
        return Err(EntropyError::NoRdrand);
    }
    let first = next_u64().ok_or(EntropyError::RdrandBroken)?;
    let second = next_u64().ok_or(EntropyError::RdrandBroken)?;
    if first == second {
        return Err(EntropyError::RdrandBroken);
    }
    Ok(Rdseed(leaf7.ebx & (1 << 18) != 0))
}

/// Whether the CPU has RDSEED.
pub struct Rdseed(pub bool);

/// One RDRAND draw, retried as Intel advises (10 times) when it reports no value ready.
pub fn next_u64() -> Option<u64> {
    let rdrand = RdRand::new()?;
    (0..10).find_map(|_| rdrand.get_u64())
}

/// `buffer` filled from RDRAND. Panics (powering off) if RDRAND stops answering: serving with
/// predictable randomness is worse than not serving.
pub fn fill(buffer: &mut [u8]) {
    for chunk in buffer.chunks_mut(8) {
        let value = next_u64().expect("RDRAND stopped answering");
        chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
    }
}

/// RDRAND as the random generator RustCrypto's key generation takes.
pub struct Rdrand;

impl rand_core::RngCore for Rdrand {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        next_u64().expect("RDRAND stopped answering")
    }

    fn fill_bytes(&mut self, buffer: &mut [u8]) {
        fill(buffer);
    }

    fn try_fill_bytes(&mut self, buffer: &mut [u8]) -> Result<(), rand_core::Error> {
        fill(buffer);
        Ok(())
    }
}

impl rand_core::CryptoRng for Rdrand {}
