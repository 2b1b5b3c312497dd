//! An instance's memory cap, which also remembers how much linear memory the instance used: the
//! host's and the unikernel's instances live under the same.

use wasmtime::ResourceLimiter;

/// Table elements one instance may have: far more than the component's few hundred functions.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// An instance's memory cap, which also remembers how much the instance used.
pub struct MemoryCap {
    limit: usize,
    peak: usize,
}

impl MemoryCap {
    pub fn new(limit: usize) -> MemoryCap {
        MemoryCap { limit, peak: 0 }
    }

    /// The most linear memory the instance has had.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.peak = self.peak.max(current);
        let allowed = desired <= self.limit;
        if allowed {
            self.peak = self.peak.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
