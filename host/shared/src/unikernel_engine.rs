//! The wasmtime settings of the unikernel's engine, which code compiled ahead for it must share:
//! `tls-site compile --unikernel` (host/src) compiles with them, the unikernel (host/unikernel)
//! runs with them, so both call this one function.
//!
//! The unikernel has no virtual memory and takes no signals or interrupts: traps are explicit
//! bounds checks (no guard pages, no reservation), linear memory is plain heap memory that grows
//! by copying, and a guest's CPU is bounded by fuel (no timer can interrupt it).

/// The Rust target the unikernel is built for, and the `.cwasm` compiled for.
pub const TARGET: &str = "x86_64-unknown-none";

/// The largest stack a guest call may use: within the unikernel's one 2 MiB stack.
const MAX_WASM_STACK: usize = 512 << 10;

/// The CPU features the code is compiled to use beyond x86_64's baseline (Cranelift's names), and
/// the same as wasmtime asks the unikernel about them: float rounding and the like as
/// instructions, where the baseline would call out to functions the unikernel does not have.
pub const CRANELIFT_FLAGS: [&str; 4] = ["has_sse3", "has_ssse3", "has_sse41", "has_sse42"];
pub const CPU_FEATURES: [&str; 4] = ["sse3", "ssse3", "sse4.1", "sse4.2"];

/// Sets `config` as the unikernel's engine is set.
pub fn configure(config: &mut wasmtime::Config) {
    config
        .signals_based_traps(false)
        .memory_reservation(0)
        .memory_guard_size(0)
        .memory_reservation_for_growth(0)
        .memory_init_cow(false)
        .consume_fuel(true)
        .max_wasm_stack(MAX_WASM_STACK)
        // As the host's engine: `+wide-arithmetic` multiplies as instructions.
        .wasm_wide_arithmetic(true)
        // The runtime without std has no GC: the compiled code must not use it (nor threads,
        // which the compiling side turns off: only it has the setting).
        .gc_support(false)
        // A trap's line names its reason, not the wasm offsets it came from: no address map in
        // the image (a smaller image, and its boot copies less).
        .generate_address_map(false)
        .native_unwind_info(false);
}
