//! CPU exceptions, to die well: each ends in the panic handler (the message on the console, then
//! power-off) instead of a triple fault. The one interrupt taken is the local APIC timer's tick
//! (timer.rs), which only wakes the CPU from `hlt`.

use core::arch::global_asm;
use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

// One stub per exception vector, passing its number and the stack (where the CPU pushed the
// faulting address) to `unikernel_fault`, which does not return.
global_asm!(
    r#"
    .text
    .altmacro
    .macro fault_stub n
    .global unikernel_fault_\n
unikernel_fault_\n:
    mov $\n, %edi
    mov %rsp, %rsi
    and $-16, %rsp
    call unikernel_fault
    .endm
    .macro fault_entry n
    .quad unikernel_fault_\n
    .endm
    .set i, 0
    .rept 32
    fault_stub %i
    .set i, i + 1
    .endr

    // The timer's tick: end of interrupt to the local APIC (its EOI register at 0xfee000b0,
    // timer.rs), and back to where `hlt` was.
    .global unikernel_tick
unikernel_tick:
    push %rax
    mov $0xfee000b0, %rax
    movl $0, (%rax)
    pop %rax
    iretq

    // The APIC's spurious interrupt: no end of interrupt is due.
    .global unikernel_spurious
unikernel_spurious:
    iretq

    .section .rodata
    .balign 8
    .global unikernel_fault_table
unikernel_fault_table:
    .set i, 0
    .rept 32
    fault_entry %i
    .set i, i + 1
    .endr
    .text
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    /// The addresses of the 32 exception stubs.
    static unikernel_fault_table: [usize; 32];
    fn unikernel_tick();
    fn unikernel_spurious();
}

/// The vectors whose exception pushes an error code before the faulting address.
const WITH_ERROR_CODE: [u64; 9] = [8, 10, 11, 12, 13, 14, 17, 21, 30];

#[unsafe(no_mangle)]
extern "C" fn unikernel_fault(vector: u64, stack: *const u64) -> ! {
    let at = usize::from(WITH_ERROR_CODE.contains(&vector));
    // SAFETY: the CPU pushed the error code (for those vectors) and the return frame here.
    let address = unsafe { *stack.add(at) };
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    panic!("CPU exception {vector} at {address:#x} (cr2 {cr2:#x})");
}

/// Installs the exception handlers and the timer's. Interrupts stay disabled.
pub fn init() {
    let idt = alloc::boxed::Box::leak(alloc::boxed::Box::new(InterruptDescriptorTable::new()));
    // SAFETY: a table of addresses the assembly above lays out, never written.
    let faults = unsafe { &unikernel_fault_table };
    for (vector, &stub) in faults.iter().enumerate() {
        let address = VirtAddr::new(stub as u64);
        // SAFETY: each stub is code of ours that never returns; the slots 0..32 are the
        // exceptions (some reserved, harmless to fill).
        unsafe {
            match vector {
                0 => idt.divide_error.set_handler_addr(address),
                1 => idt.debug.set_handler_addr(address),
                2 => idt.non_maskable_interrupt.set_handler_addr(address),
                3 => idt.breakpoint.set_handler_addr(address),
                4 => idt.overflow.set_handler_addr(address),
                5 => idt.bound_range_exceeded.set_handler_addr(address),
                6 => idt.invalid_opcode.set_handler_addr(address),
                7 => idt.device_not_available.set_handler_addr(address),
                8 => idt.double_fault.set_handler_addr(address),
                10 => idt.invalid_tss.set_handler_addr(address),
                11 => idt.segment_not_present.set_handler_addr(address),
                12 => idt.stack_segment_fault.set_handler_addr(address),
                13 => idt.general_protection_fault.set_handler_addr(address),
                14 => idt.page_fault.set_handler_addr(address),
                16 => idt.x87_floating_point.set_handler_addr(address),
                17 => idt.alignment_check.set_handler_addr(address),
                18 => idt.machine_check.set_handler_addr(address),
                19 => idt.simd_floating_point.set_handler_addr(address),
                _ => continue,
            };
        }
    }
    // SAFETY: the two stubs above, which save what they touch and return with iretq.
    unsafe {
        idt[crate::timer::TICK_VECTOR]
            .set_handler_addr(VirtAddr::new(unikernel_tick as *const () as u64));
        idt[crate::timer::SPURIOUS_VECTOR]
            .set_handler_addr(VirtAddr::new(unikernel_spurious as *const () as u64));
    }
    idt.load();
}
