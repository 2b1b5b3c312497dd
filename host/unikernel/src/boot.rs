//! The machine handed over: the PVH entry (qemu's `-kernel` jumps here in 32-bit protected mode,
//! paging off, `ebx` holding the start-info), the switch to long mode, and what the start-info
//! says (the command line, the memory map, the modules).
//!
//! The page tables map the first 4 GiB one to one in 2 MiB pages, writable and executable: RAM,
//! and the MMIO of the virtio devices and the ACPI event device below 4 GiB. No NX: wasmtime's
//! code is loaded into the heap and run from there.

use core::arch::global_asm;

/// `hvm_start_info.magic` (xen/include/public/arch-x86/hvm/start_info.h).
const START_INFO_MAGIC: u32 = 0x336e_c578;
/// E820 type of usable RAM in the start-info's memory map.
const MEMORY_RAM: u32 = 1;

// The PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18): the 32-bit physical address qemu
// enters at. Then the entry: identity page tables, PAE, long mode, SSE (wasmtime's code uses it),
// a 64-bit GDT, and a call to `kernel_main(start_info)` on our own stack.
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .text.pvh, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    mov %ebx, %esi
    # PML4[0] -> PDPT
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    # PDPT[0..4] -> the four page directories
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $12, %eax
    add $boot_pd, %eax
    or $3, %eax
    mov %eax, boot_pdpt(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jb 1b
    # PD[0..2048]: 2 MiB pages, present, writable, huge
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 2b
    mov $boot_pml4, %eax
    mov %eax, %cr3
    # CR4: PAE, OSFXSR, OSXMMEXCPT
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4
    # EFER.LME
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    # CR0: paging, MP; EM off (SSE in use)
    mov %cr0, %eax
    or $0x80000002, %eax
    and $0xFFFFFFFB, %eax
    mov %eax, %cr0
    lgdt boot_gdt_pointer
    ljmp $0x08, $3f

    .code64
3:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    mov %esi, %edi
    call kernel_main
4:  hlt
    jmp 4b

    .section .rodata
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_pointer:
    .word boot_gdt_pointer - boot_gdt - 1
    .long boot_gdt

    .section .bss
    .balign 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd: .skip 4096 * 4
    .balign 16
boot_stack: .skip {stack}
boot_stack_top:
    .text
    "#,
    stack = const STACK_BYTES,
    options(att_syntax)
);

/// The one stack: the loop and wasmtime's guest calls (which check against `max_wasm_stack`).
pub const STACK_BYTES: usize = 2 << 20;

/// `struct hvm_start_info`, version 1.
#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    modules: u32,
    module_list: u64,
    command_line: u64,
    rsdp: u64,
    memory_map: u64,
    memory_map_entries: u32,
    reserved: u32,
}

#[repr(C)]
struct MemoryMapEntry {
    address: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// What the loader told us.
pub struct Handover {
    pub command_line: &'static str,
    /// Usable RAM past the kernel's image, as (start, length); (0, 0) where there is none.
    pub free_memory: [(usize, usize); MAX_REGIONS],
}

/// At most this many RAM regions are given to the heap (qemu's microvm has one or two).
const MAX_REGIONS: usize = 8;

unsafe extern "C" {
    /// The end of the kernel's image, bss included (link.ld).
    static kernel_end: u8;
}

impl Handover {
    /// Reads the start-info at `address`.
    ///
    /// # Safety
    /// `address` must be what the PVH loader passed in `ebx`, still intact (nothing has been
    /// allocated over it: the loader puts it below 1 MiB, which the heap never takes).
    pub unsafe fn read(address: u32) -> Handover {
        // SAFETY: the caller's promise; the start-info and what it points at are below 4 GiB, all
        // mapped one to one.
        let info = unsafe { &*(address as usize as *const StartInfo) };
        assert_eq!(info.magic, START_INFO_MAGIC, "not started by a PVH loader");
        let command_line = if info.command_line == 0 {
            ""
        } else {
            // SAFETY: a NUL-terminated string the loader wrote, mapped and never written again.
            let c = unsafe { core::ffi::CStr::from_ptr(info.command_line as usize as *const _) };
            c.to_str().unwrap_or("")
        };
        let kernel_end_address = &raw const kernel_end as usize;
        let mut free_memory = [(0, 0); MAX_REGIONS];
        let entries = if info.version >= 1 && info.memory_map != 0 {
            // SAFETY: the loader's memory map, `memory_map_entries` long.
            unsafe {
                core::slice::from_raw_parts(
                    info.memory_map as usize as *const MemoryMapEntry,
                    info.memory_map_entries as usize,
                )
            }
        } else {
            &[]
        };
        let mut used = 0;
        for entry in entries.iter().filter(|entry| entry.kind == MEMORY_RAM) {
            // Only above the kernel (low memory holds the loader's tables) and below 4 GiB (mapped).
            let start = (entry.address as usize).max(kernel_end_address);
            let end = ((entry.address + entry.size) as usize).min(1 << 32);
            if end > start && used < free_memory.len() {
                free_memory[used] = (start, end - start);
                used += 1;
            }
        }
        Handover {
            command_line,
            free_memory,
        }
    }
}
