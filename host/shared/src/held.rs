//! What one guest instance holds in its host, kept together because every crypto import touches
//! all three: the host objects handed to it (its resource table), its memory cap, and the counts
//! against the crypto bounds. The host's and the unikernel's `GuestState` each keep one.

use crate::crypto_bounds::{CryptoBounds, HostObject};
use crate::memory_cap::MemoryCap;
use wasmtime::component::{Resource, ResourceTable};

/// `HashContext` and `RecordKey` are the host's own types of those objects (`CryptoBounds`).
pub struct Held<HashContext, RecordKey> {
    pub table: ResourceTable,
    pub memory: MemoryCap,
    pub bounds: CryptoBounds<HashContext, RecordKey>,
}

impl<HashContext, RecordKey> Held<HashContext, RecordKey> {
    /// Nothing held yet, under a cap of `memory_bytes` (linear memory and host objects).
    pub fn new(memory_bytes: usize) -> Self {
        Held {
            table: ResourceTable::new(),
            memory: MemoryCap::new(memory_bytes),
            bounds: CryptoBounds::default(),
        }
    }

    /// Counts a crypto call; past the bound, the error that traps the guest.
    pub fn call(&mut self) -> wasmtime::Result<()> {
        Ok(self.bounds.call()?)
    }

    /// Puts `object` in the guest's table, if it may hold one more.
    pub fn hold<T: Send + 'static>(
        &mut self,
        kind: HostObject,
        object: T,
    ) -> wasmtime::Result<Resource<T>> {
        self.bounds.hold(kind, &mut self.memory)?;
        Ok(self.table.push(object)?)
    }

    /// Takes `object` out of the guest's table.
    pub fn release<T: 'static>(
        &mut self,
        kind: HostObject,
        object: Resource<T>,
    ) -> wasmtime::Result<T> {
        let object = self.table.delete(object)?;
        self.bounds.release(kind, &mut self.memory);
        Ok(object)
    }
}
