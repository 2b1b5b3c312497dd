//! What wasmtime asks of an embedder without an operating system (its `sys/custom/capi.rs`),
//! answered here, each where wasmtime expects it. With traps as explicit checks
//! (`tls_site_shared::unikernel_engine`) and code published by `sandbox::IdentityMappedCode`,
//! what is left is wasmtime's thread-local state: two pointers, and one thread.

use core::sync::atomic::{AtomicPtr, Ordering};

/// Slot 0 is the runtime's state, slot 1 the component model's async state; both start null.
static TLS: [AtomicPtr<u8>; 2] = [
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
];

/// wasmtime's thread-local pointer `slot`: the unikernel has one thread, so a static is its TLS.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    TLS[slot].load(Ordering::Relaxed)
}

/// Sets wasmtime's thread-local pointer `slot`.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_set(slot: usize, pointer: *mut u8) {
    TLS[slot].store(pointer, Ordering::Relaxed);
}
