//! An instance's memory cap: its linear memory and what it holds in the host (`crypto_bounds`)
//! under one limit, remembering the most it used. The host's and the unikernel's instances live
//! under the same.

use wasmtime::ResourceLimiter;

/// Table elements one instance may have: far more than the component's few hundred functions.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// An instance's memory cap, which also remembers how much the instance used. The instance's
/// memory is its linear memory and what it holds in the host (hash contexts, record keys:
/// `crypto_bounds`), under the one cap.
pub struct MemoryCap {
    limit: usize,
    /// Linear memory now, as grown so far (instantiation counts as growth from zero).
    linear: usize,
    /// Bytes of the host's objects the instance holds.
    host: usize,
    peak: usize,
}

impl MemoryCap {
    pub fn new(limit: usize) -> MemoryCap {
        MemoryCap {
            limit,
            linear: 0,
            host: 0,
            peak: 0,
        }
    }

    /// The most memory the instance has had, linear and held in the host.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Counts `bytes` more of host objects against the cap, if they fit; false if not.
    pub fn hold(&mut self, bytes: usize) -> bool {
        let fits = self.linear + self.host + bytes <= self.limit;
        if fits {
            self.host += bytes;
            self.peak = self.peak.max(self.linear + self.host);
        }
        fits
    }

    /// `bytes` of host objects the instance let go of.
    pub fn release(&mut self, bytes: usize) {
        self.host = self.host.saturating_sub(bytes);
    }

    /// The memory the instance has now: `(linear, held in the host)`.
    pub fn used(&self) -> (usize, usize) {
        (self.linear, self.host)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let linear = self.linear.saturating_sub(current) + desired;
        let allowed = linear + self.host <= self.limit;
        if allowed {
            self.linear = linear;
            self.peak = self.peak.max(linear + self.host);
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
