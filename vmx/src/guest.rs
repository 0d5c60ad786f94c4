//! Reading what a sandbox was doing when it touched a trapped page: its page tables (to find the bytes of the
//! faulting instruction) and that instruction (to replay a write to the xAPIC page after checking it). Pure and
//! host-tested; the monitor supplies guest-physical reads.
//!
//! Written here rather than taken from a crate: the instruction decoders on crates.io (iced-x86, yaxpeax) are
//! full disassemblers, far larger than the monitor itself, to recognise the two MOV forms a kernel uses for MMIO.
//! Anything else is refused, and the monitor stops the sandbox rather than guess.
#![forbid(unsafe_code)]

/// The guest's paging controls (from the VMCS or VMCB at the exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Paging {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

const CR0_PG: u64 = 1 << 31;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const PTE_PRESENT: u64 = 1;
const PTE_LARGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

impl Paging {
    /// Long mode (IA-32e) is active: 64-bit code may run.
    pub fn long_mode(&self) -> bool {
        self.efer & EFER_LMA != 0
    }
}

/// Guest-physical address behind guest-virtual `gva`, through the guest's own page tables. `read` returns the
/// 8-byte guest-physical word at an address (None: outside the sandbox's memory). Paging off and 4-level long
/// mode are understood (the two modes a questv kernel runs in); 32-bit, PAE and 5-level paging are not (None).
pub fn translate(p: &Paging, gva: u64, mut read: impl FnMut(u64) -> Option<u64>) -> Option<u64> {
    if p.cr0 & CR0_PG == 0 {
        return Some(gva & 0xFFFF_FFFF);
    }
    if !p.long_mode() || p.cr4 & CR4_LA57 != 0 {
        return None;
    }
    let mut table = p.cr3 & ADDR_MASK;
    for level in (0..4u32).rev() {
        let shift = 12 + 9 * level;
        let e = read(table + ((gva >> shift) & 0x1FF) * 8)?;
        if e & PTE_PRESENT == 0 {
            return None;
        }
        if level == 0 || (e & PTE_LARGE != 0 && level <= 2) {
            let size = 1u64 << shift;
            return Some((e & ADDR_MASK & !(size - 1)) | (gva & (size - 1)));
        }
        table = e & ADDR_MASK;
    }
    None
}

/// Where the value a MOV writes comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// General-purpose register by its encoding number (0 = RAX, 1 = RCX, ... 4 = RSP, ... 15 = R15).
    Reg(u8),
    /// AH, CH, DH or BH (byte forms without REX): bits 8–15 of register 0–3.
    HighByte(u8),
    Imm(u64),
}

/// A decoded memory write: `MOV r/m, reg` (opcodes 88, 89) or `MOV r/m, imm` (C6 /0, C7 /0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioWrite {
    /// Instruction length in bytes (the monitor advances RIP by it after replaying the write).
    pub len: u8,
    /// Operand size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the instruction needs.
    Truncated,
    /// Not one of the MOV-to-memory forms (or a register destination).
    Unsupported { opcode: u8 },
    /// REP/REPNE prefixes or 16-bit addressing: never used for MMIO by a questv kernel.
    Prefix(u8),
}

/// Decode the instruction at the start of `bytes` (up to 15). `long_mode`: 64-bit code (REX prefixes exist);
/// otherwise 32-bit protected-mode code.
pub fn decode_write(bytes: &[u8], long_mode: bool) -> Result<MmioWrite, DecodeError> {
    let at = |i: usize| bytes.get(i).copied().ok_or(DecodeError::Truncated);
    let mut i = 0;
    let mut opsize16 = false;
    loop {
        match at(i)? {
            0x66 => opsize16 = true,
            0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 | 0xF0 => {}
            p @ (0x67 | 0xF2 | 0xF3) => return Err(DecodeError::Prefix(p)),
            _ => break,
        }
        i += 1;
        if i >= 15 {
            return Err(DecodeError::Truncated);
        }
    }
    let mut rex = 0u8;
    if long_mode && (0x40..=0x4F).contains(&at(i)?) {
        rex = at(i)?;
        i += 1;
    }
    let opcode = at(i)?;
    i += 1;
    let (byte_op, imm) = match opcode {
        0x88 => (true, false),
        0x89 => (false, false),
        0xC6 => (true, true),
        0xC7 => (false, true),
        _ => return Err(DecodeError::Unsupported { opcode }),
    };
    let modrm = at(i)?;
    i += 1;
    let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if md == 3 || (imm && reg != 0) {
        return Err(DecodeError::Unsupported { opcode });
    }
    // Addressing bytes: SIB, displacement. The address itself is not needed (the exit reports it).
    if rm == 4 {
        let sib = at(i)?;
        i += 1;
        if md == 0 && sib & 7 == 5 {
            i += 4;
        }
    } else if md == 0 && rm == 5 {
        i += 4; // disp32 (RIP-relative in 64-bit mode)
    }
    i += match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    let rex_w = rex & 8 != 0;
    let size: u8 = if byte_op {
        1
    } else if rex_w {
        8
    } else if opsize16 {
        2
    } else {
        4
    };
    let source = if imm {
        let n = usize::from(size.min(4));
        let raw = (0..n).try_fold(0u64, |v, k| Ok::<u64, DecodeError>(v | (u64::from(at(i + k)?) << (8 * k))))?;
        i += n;
        // A 32-bit immediate of a 64-bit MOV is sign-extended.
        Source::Imm(if size == 8 { raw as u32 as i32 as i64 as u64 } else { raw })
    } else {
        let r = reg | if rex & 4 != 0 { 8 } else { 0 };
        if byte_op && rex == 0 && (4..8).contains(&r) {
            Source::HighByte(r - 4)
        } else {
            Source::Reg(r)
        }
    };
    if i > bytes.len() {
        return Err(DecodeError::Truncated);
    }
    if i > 15 {
        return Err(DecodeError::Truncated);
    }
    Ok(MmioWrite { len: i as u8, size, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn w(bytes: &[u8]) -> Result<MmioWrite, DecodeError> {
        decode_write(bytes, true)
    }

    #[test]
    fn decodes_the_mov_forms_a_kernel_uses_for_mmio() {
        // mov dword ptr [rax+0xb0], ecx
        assert_eq!(w(&[0x89, 0x88, 0xB0, 0, 0, 0]), Ok(MmioWrite { len: 6, size: 4, source: Source::Reg(1) }));
        // mov dword ptr [rip+0x1234], eax
        assert_eq!(w(&[0x89, 0x05, 0x34, 0x12, 0, 0]), Ok(MmioWrite { len: 6, size: 4, source: Source::Reg(0) }));
        // mov dword ptr [rcx], 0
        assert_eq!(w(&[0xC7, 0x01, 0, 0, 0, 0]), Ok(MmioWrite { len: 6, size: 4, source: Source::Imm(0) }));
        // mov dword ptr [r8+rdx*4+0x10], r9d
        assert_eq!(w(&[0x45, 0x89, 0x4C, 0x90, 0x10]), Ok(MmioWrite { len: 5, size: 4, source: Source::Reg(9) }));
        // mov dword ptr [rsp+8], 0x100 (SIB with disp8)
        assert_eq!(w(&[0xC7, 0x44, 0x24, 0x08, 0, 1, 0, 0]), Ok(MmioWrite { len: 8, size: 4, source: Source::Imm(0x100) }));
        // mov dword ptr [0xfee000b0], eax via SIB without base (disp32)
        assert_eq!(w(&[0x89, 0x04, 0x25, 0xB0, 0, 0xE0, 0xFE]), Ok(MmioWrite { len: 7, size: 4, source: Source::Reg(0) }));
        // mov qword ptr [rdi], rax; mov qword ptr [rdi], -1 (sign-extended)
        assert_eq!(w(&[0x48, 0x89, 0x07]), Ok(MmioWrite { len: 3, size: 8, source: Source::Reg(0) }));
        assert_eq!(w(&[0x48, 0xC7, 0x07, 0xFF, 0xFF, 0xFF, 0xFF]), Ok(MmioWrite { len: 7, size: 8, source: Source::Imm(u64::MAX) }));
        // mov word ptr [rbx], ax; mov byte ptr [rbx], ah; mov byte ptr [rbx], sil (REX)
        assert_eq!(w(&[0x66, 0x89, 0x03]), Ok(MmioWrite { len: 3, size: 2, source: Source::Reg(0) }));
        assert_eq!(w(&[0x88, 0x23]), Ok(MmioWrite { len: 2, size: 1, source: Source::HighByte(0) }));
        assert_eq!(w(&[0x40, 0x88, 0x33]), Ok(MmioWrite { len: 3, size: 1, source: Source::Reg(6) }));
        // 32-bit code: 0x48 is DEC eax, not REX.
        assert_eq!(decode_write(&[0x48, 0x89, 0x07], false), Err(DecodeError::Unsupported { opcode: 0x48 }));
        assert_eq!(decode_write(&[0x89, 0x07], false), Ok(MmioWrite { len: 2, size: 4, source: Source::Reg(0) }));
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(w(&[0x89, 0xC8]), Err(DecodeError::Unsupported { opcode: 0x89 }), "register destination");
        assert_eq!(w(&[0xC7, 0x08, 0, 0, 0, 0]), Err(DecodeError::Unsupported { opcode: 0xC7 }), "C7 /1");
        assert_eq!(w(&[0x09, 0x07]), Err(DecodeError::Unsupported { opcode: 0x09 }), "OR is a read-modify-write");
        assert_eq!(w(&[0xF3, 0xAB]), Err(DecodeError::Prefix(0xF3)), "REP STOS");
        assert_eq!(w(&[0x67, 0x89, 0x07]), Err(DecodeError::Prefix(0x67)));
        assert_eq!(w(&[0x89, 0x88, 0xB0, 0]), Err(DecodeError::Truncated));
        assert_eq!(w(&[0xC7, 0x01, 0, 0]), Err(DecodeError::Truncated));
        assert_eq!(w(&[]), Err(DecodeError::Truncated));
        assert_eq!(w(&[0x66; 20]), Err(DecodeError::Truncated));
    }

    #[test]
    fn walks_four_level_tables_with_large_pages() {
        let mut mem: HashMap<u64, u64> = HashMap::new();
        // CR3 = 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000; a 2 MiB page and a 1 GiB page elsewhere.
        mem.insert(0x1000, 0x2003);
        mem.insert(0x2000, 0x3003);
        mem.insert(0x3000 + 8, 0x4003); // PD[1]: 0x200000-0x3FFFFF via PT
        mem.insert(0x4000 + 5 * 8, 0xABC_D003); // PT[5] → frame 0xABCD000
        mem.insert(0x3000 + 2 * 8, 0x60_0083); // PD[2]: 2 MiB page at 0x600000
        mem.insert(0x2000 + 3 * 8, 0x8000_0083); // PDPT[3]: 1 GiB page at 2 GiB
        let p = Paging { cr0: CR0_PG | 1, cr3: 0x1000, cr4: 1 << 5, efer: EFER_LMA | (1 << 8) };
        let rd = |a: u64| mem.get(&a).copied().or(Some(0));
        assert_eq!(translate(&p, 0x205_123, rd), Some(0xABC_D123));
        assert_eq!(translate(&p, 0x412_345, rd), Some(0x612_345));
        assert_eq!(translate(&p, 0xC000_1234, rd), Some(0x8000_1234));
        assert_eq!(translate(&p, 0x800_0000, rd), None, "not present");
        assert_eq!(translate(&p, 0x205_123, |_| None), None, "tables outside the sandbox");
        let off = Paging { cr0: 1, ..Paging::default() };
        assert_eq!(translate(&off, 0x10_2345, rd), Some(0x10_2345));
        let pae32 = Paging { cr0: CR0_PG | 1, cr3: 0x1000, cr4: 1 << 5, efer: 0 };
        assert_eq!(translate(&pae32, 0x1000, rd), None);
    }
}
