//! The bounds on what one guest instance holds in the host and asks of it through `crypto` and
//! `tickets`: live hash contexts and record keys (their bytes counted against the instance's
//! memory cap, with its linear memory), signatures and calls per connection. Past a bound the host
//! call fails with `OverBound`, which traps the instance alone; the access log's line says which.
//! The host and the unikernel count alike, each with its own types of hash context and record key.

use crate::memory_cap::MemoryCap;
use core::marker::PhantomData;

/// Live hash contexts: rustls's transcript and the forks it takes of it, a few at a time.
pub const MAX_HASH_CONTEXTS: usize = 16;
/// Live record keys: a direction's handshake and traffic keys, two directions.
pub const MAX_RECORD_KEYS: usize = 8;
/// Signatures per connection: a TLS 1.3 handshake signs once (its CertificateVerify).
pub const MAX_SIGNATURES: u32 = 1;
/// Crypto calls per connection. A handshake makes about a hundred, then one a record; the most
/// records a client can make the guest open is its drain's 256 KiB in records of 22 bytes
/// (guest/tls/src/connection.rs, `DRAIN_BYTES`), about 12,000. Five times that.
pub const MAX_CRYPTO_CALLS: u32 = 1 << 16;

/// Bytes a resource-table slot of wasmtime's takes beside the object (its entry and the box),
/// rounded up.
const TABLE_SLOT_BYTES: usize = 64;

/// What a guest holds in the host, by kind.
#[derive(Clone, Copy, Debug)]
pub enum HostObject {
    HashContext,
    RecordKey,
}

/// Why the host refused a guest's call and trapped it.
#[derive(Debug, thiserror::Error)]
pub enum OverBound {
    #[error("the guest asked for more than {MAX_HASH_CONTEXTS} live hash contexts in the host")]
    HashContexts,
    #[error("the guest asked for more than {MAX_RECORD_KEYS} live record keys in the host")]
    RecordKeys,
    #[error(
        "the guest asked for more than {MAX_SIGNATURES} signature on one connection (a handshake signs once)"
    )]
    Signatures,
    #[error("the guest made more than {MAX_CRYPTO_CALLS} crypto calls on one connection")]
    Calls,
    #[error(
        "the guest's objects in the host would take its memory past the instance's cap ({limit} bytes: {linear} linear, {held} held in the host)"
    )]
    Memory {
        limit: usize,
        linear: usize,
        held: usize,
    },
}

/// The counts against the bounds, for one instance; `new_connection` starts the per-connection
/// ones again (an instance serves one connection, but tests drive several through one).
/// `HashContext` and `RecordKey` are the host's types of those objects: their sizes are what a
/// held one counts against the memory cap.
#[derive(Debug)]
pub struct CryptoBounds<HashContext, RecordKey> {
    hash_contexts: usize,
    record_keys: usize,
    signatures: u32,
    calls: u32,
    objects: PhantomData<fn() -> (HashContext, RecordKey)>,
}

impl<HashContext, RecordKey> Default for CryptoBounds<HashContext, RecordKey> {
    fn default() -> Self {
        CryptoBounds {
            hash_contexts: 0,
            record_keys: 0,
            signatures: 0,
            calls: 0,
            objects: PhantomData,
        }
    }
}

impl<HashContext, RecordKey> CryptoBounds<HashContext, RecordKey> {
    /// The bytes an `object` takes in the host: the object itself (fixed size: the contexts and
    /// keys buffer nothing that grows) and its table slot.
    pub fn bytes(object: HostObject) -> usize {
        TABLE_SLOT_BYTES
            + match object {
                HostObject::HashContext => size_of::<HashContext>(),
                HostObject::RecordKey => size_of::<RecordKey>(),
            }
    }

    /// One more crypto call on this connection.
    pub fn call(&mut self) -> Result<(), OverBound> {
        self.calls += 1;
        match self.calls > MAX_CRYPTO_CALLS {
            true => Err(OverBound::Calls),
            false => Ok(()),
        }
    }

    /// One more signature on this connection (and a call).
    pub fn sign(&mut self) -> Result<(), OverBound> {
        self.call()?;
        self.signatures += 1;
        match self.signatures > MAX_SIGNATURES {
            true => Err(OverBound::Signatures),
            false => Ok(()),
        }
    }

    /// One more `object` the guest holds in the host, its bytes counted in `memory`.
    pub fn hold(&mut self, object: HostObject, memory: &mut MemoryCap) -> Result<(), OverBound> {
        let (count, max, over) = match object {
            HostObject::HashContext => (
                &mut self.hash_contexts,
                MAX_HASH_CONTEXTS,
                OverBound::HashContexts,
            ),
            HostObject::RecordKey => (
                &mut self.record_keys,
                MAX_RECORD_KEYS,
                OverBound::RecordKeys,
            ),
        };
        if *count >= max {
            return Err(over);
        }
        if !memory.hold(Self::bytes(object)) {
            let (linear, held) = memory.used();
            return Err(OverBound::Memory {
                limit: memory.limit(),
                linear,
                held,
            });
        }
        *count += 1;
        Ok(())
    }

    /// The guest let go of an `object` it held.
    pub fn release(&mut self, object: HostObject, memory: &mut MemoryCap) {
        let count = match object {
            HostObject::HashContext => &mut self.hash_contexts,
            HostObject::RecordKey => &mut self.record_keys,
        };
        *count = count.saturating_sub(1);
        memory.release(Self::bytes(object));
    }

    /// A new connection on this instance: its signatures and calls count from zero; what the
    /// instance holds stays counted.
    pub fn new_connection(&mut self) {
        self.signatures = 0;
        self.calls = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    /// Objects of the sizes the host's ring contexts and keys have, about.
    type Bounds = CryptoBounds<[u8; 216], [u8; 560]>;

    #[test]
    fn a_connection_gets_one_signature_and_a_bounded_number_of_calls() {
        let mut bounds = Bounds::default();
        assert!(bounds.sign().is_ok());
        assert!(matches!(bounds.sign(), Err(OverBound::Signatures)));
        bounds.new_connection();
        assert!(bounds.sign().is_ok());
        for _ in 1..MAX_CRYPTO_CALLS {
            bounds.call().unwrap();
        }
        assert!(matches!(bounds.call(), Err(OverBound::Calls)));
    }

    #[test]
    fn live_objects_are_bounded_by_count_and_by_the_instances_memory() {
        let mut bounds = Bounds::default();
        let mut memory = MemoryCap::new(1 << 20);
        for _ in 0..MAX_HASH_CONTEXTS {
            bounds.hold(HostObject::HashContext, &mut memory).unwrap();
        }
        assert!(matches!(
            bounds.hold(HostObject::HashContext, &mut memory),
            Err(OverBound::HashContexts)
        ));
        bounds.release(HostObject::HashContext, &mut memory);
        bounds.hold(HostObject::HashContext, &mut memory).unwrap();
        assert_eq!(
            memory.used().1,
            MAX_HASH_CONTEXTS * Bounds::bytes(HostObject::HashContext)
        );

        // Linear memory and host objects share the cap: with the linear memory one record key
        // short of it, one key fits and a second does not; while the key is held, the linear
        // memory cannot grow into its bytes.
        let limit = 1 << 20;
        let mut memory = MemoryCap::new(limit);
        let record_key = Bounds::bytes(HostObject::RecordKey);
        assert!(memory.memory_growing(0, limit - record_key, None).unwrap());
        let mut bounds = Bounds::default();
        bounds.hold(HostObject::RecordKey, &mut memory).unwrap();
        assert!(matches!(
            bounds.hold(HostObject::RecordKey, &mut memory),
            Err(OverBound::Memory { .. })
        ));
        assert!(
            !memory
                .memory_growing(limit - record_key, limit, None)
                .unwrap()
        );
        bounds.release(HostObject::RecordKey, &mut memory);
        assert!(
            memory
                .memory_growing(limit - record_key, limit, None)
                .unwrap()
        );
    }
}
