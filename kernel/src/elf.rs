//! ELF64 program checks: parse with `goblin` and turn a static x86_64 executable into a load plan, refusing
//! anything malformed or hostile (wrong class/machine/type, dynamic linking, segments outside user space or
//! overlapping, file ranges outside the file, absurd sizes, an entry point outside executable code).
#![forbid(unsafe_code)]

use crate::mm::uspace::{USER_BASE, USER_END};
use alloc::string::String;
use alloc::vec::Vec;
use goblin::elf::header::{EM_X86_64, ET_DYN, ET_EXEC};
use goblin::elf::program_header::{PF_W, PF_X, PT_DYNAMIC, PT_INTERP, PT_LOAD, PT_PHDR};

/// Largest total memory image we load (keeps one bad file from eating all RAM).
pub const MAX_IMAGE: u64 = 256 << 20;
pub const MAX_SEGMENTS: usize = 16;
const PAGE: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub mem_size: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub writable: bool,
    pub executable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    pub entry: u64,
    pub segments: Vec<Segment>,
    /// First page above the highest segment: where the brk heap starts.
    pub image_end: u64,
    /// Where the program headers are in memory (AT_PHDR; 0 if no segment loads them), their entry size and
    /// number: static C libraries find their TLS segment through them.
    pub phdr: u64,
    pub phent: u16,
    pub phnum: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    Parse,
    /// ELFCLASS32: a 32-bit program.
    Not64Bit,
    BigEndian,
    NotX86_64 { machine: u16 },
    /// A program interpreter is named: the dynamic linker this program needs.
    DynamicallyLinked { interpreter: String },
    NotStaticExecutable,
    NoLoadableSegment,
    TooManySegments,
    SegmentOutsideUserSpace { vaddr: u64 },
    FileRangeOutsideFile { offset: u64 },
    FileSizeExceedsMemSize,
    MisalignedSegment { vaddr: u64 },
    OverlappingSegments { vaddr: u64 },
    ImageTooLarge,
    EntryNotExecutable { entry: u64 },
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ElfError::Parse => write!(f, "is not a well-formed ELF file"),
            ElfError::Not64Bit => write!(f, "is a 32-bit program: questv runs 64-bit x86-64 binaries"),
            ElfError::BigEndian => write!(f, "is a big-endian ELF: questv runs x86-64 binaries"),
            ElfError::NotX86_64 { machine } => write!(f, "is built for ELF machine {machine} ({}), not x86-64", machine_name(*machine)),
            ElfError::DynamicallyLinked { interpreter } => {
                write!(f, "is dynamically linked (needs {interpreter}): questv runs static binaries")
            }
            ElfError::NotStaticExecutable => write!(f, "is not a static executable (ET_EXEC, or static-pie ET_DYN, without an interpreter)"),
            ElfError::NoLoadableSegment => write!(f, "has no loadable segment"),
            ElfError::TooManySegments => write!(f, "has more than {} loadable segments", MAX_SEGMENTS),
            ElfError::SegmentOutsideUserSpace { vaddr } => write!(f, "has a segment at 0x{vaddr:x} outside user space"),
            ElfError::FileRangeOutsideFile { offset } => write!(f, "has segment data at offset 0x{offset:x} beyond the end of the file (truncated?)"),
            ElfError::FileSizeExceedsMemSize => write!(f, "has a segment whose file size exceeds its memory size"),
            ElfError::MisalignedSegment { vaddr } => write!(f, "has a segment at 0x{vaddr:x} misaligned with its file offset"),
            ElfError::OverlappingSegments { vaddr } => write!(f, "has segments that overlap at 0x{vaddr:x}"),
            ElfError::ImageTooLarge => write!(f, "is larger than the {} MiB questv loads", MAX_IMAGE >> 20),
            ElfError::EntryNotExecutable { entry } => write!(f, "has its entry point 0x{entry:x} outside executable code"),
        }
    }
}

/// A name for the machines a user is likely to meet.
fn machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "i386",
        40 => "ARM",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        _ => "another architecture",
    }
}

/// The header checks that need no parse of the rest (a 32-bit or big-endian file is refused as such, even if
/// the 64-bit parser would reject it as malformed).
fn check_ident(bytes: &[u8]) -> Result<(), ElfError> {
    if bytes.len() < 20 || bytes[..4] != *b"\x7fELF" {
        return Err(ElfError::Parse);
    }
    if bytes[4] == 1 {
        return Err(ElfError::Not64Bit);
    }
    if bytes[5] == 2 {
        return Err(ElfError::BigEndian);
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if bytes[4] == 2 && bytes[5] == 1 && machine != EM_X86_64 {
        return Err(ElfError::NotX86_64 { machine });
    }
    Ok(())
}

fn page_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

/// Where a static-pie program (ET_DYN without an interpreter) is loaded: Linux's x86-64 ELF_ET_DYN_BASE
/// without address-space randomization (2/3 of the 47-bit user space, page-aligned). The program applies its
/// own relocations (its start code finds the base from `_DYNAMIC`).
pub const PIE_BASE: u64 = 0x5555_5555_4000;

pub fn plan(bytes: &[u8]) -> Result<LoadPlan, ElfError> {
    check_ident(bytes)?;
    let elf = goblin::elf::Elf::parse(bytes).map_err(|_| ElfError::Parse)?;
    if !elf.is_64 {
        return Err(ElfError::Not64Bit);
    }
    if !elf.little_endian {
        return Err(ElfError::BigEndian);
    }
    if elf.header.e_machine != EM_X86_64 {
        return Err(ElfError::NotX86_64 { machine: elf.header.e_machine });
    }
    if let Some(interp) = elf.interpreter {
        return Err(ElfError::DynamicallyLinked { interpreter: String::from(interp) });
    }
    if elf.program_headers.iter().any(|ph| ph.p_type == PT_INTERP) {
        // An interpreter segment whose name could not be read.
        return Err(ElfError::DynamicallyLinked { interpreter: String::from("a program interpreter") });
    }
    let pie = match elf.header.e_type {
        ET_EXEC => false,
        ET_DYN => true,
        _ => return Err(ElfError::NotStaticExecutable),
    };
    // A static-pie program is linked at 0 and goes at PIE_BASE; an ET_EXEC one at its link address.
    let base = if pie {
        let lowest = elf.program_headers.iter().filter(|ph| ph.p_type == PT_LOAD).map(|ph| page_down(ph.p_vaddr)).min().unwrap_or(0);
        PIE_BASE.checked_sub(lowest).ok_or(ElfError::SegmentOutsideUserSpace { vaddr: lowest })?
    } else {
        0
    };
    let mut segments: Vec<Segment> = Vec::new();
    let mut total = 0u64;
    for ph in &elf.program_headers {
        // A static-pie program's dynamic section holds its own relocations; a static ET_EXEC has none.
        if ph.p_type == PT_INTERP || (ph.p_type == PT_DYNAMIC && !pie) {
            return Err(ElfError::NotStaticExecutable);
        }
        if ph.p_type != PT_LOAD || ph.p_memsz == 0 {
            continue;
        }
        let vaddr = ph.p_vaddr.checked_add(base).ok_or(ElfError::SegmentOutsideUserSpace { vaddr: ph.p_vaddr })?;
        if segments.len() == MAX_SEGMENTS {
            return Err(ElfError::TooManySegments);
        }
        let end = vaddr.checked_add(ph.p_memsz).ok_or(ElfError::SegmentOutsideUserSpace { vaddr })?;
        if vaddr < USER_BASE || end > USER_END {
            return Err(ElfError::SegmentOutsideUserSpace { vaddr });
        }
        if ph.p_filesz > ph.p_memsz {
            return Err(ElfError::FileSizeExceedsMemSize);
        }
        if ph.p_offset.checked_add(ph.p_filesz).is_none_or(|e| e > bytes.len() as u64) {
            return Err(ElfError::FileRangeOutsideFile { offset: ph.p_offset });
        }
        if vaddr % PAGE != ph.p_offset % PAGE {
            return Err(ElfError::MisalignedSegment { vaddr });
        }
        total += end.div_ceil(PAGE) * PAGE - page_down(vaddr);
        if total > MAX_IMAGE {
            return Err(ElfError::ImageTooLarge);
        }
        segments.push(Segment {
            vaddr,
            mem_size: ph.p_memsz,
            file_offset: ph.p_offset,
            file_size: ph.p_filesz,
            writable: ph.p_flags & PF_W != 0,
            executable: ph.p_flags & PF_X != 0,
        });
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadableSegment);
    }
    // Segments may share a page (data and bss usually do; the loader merges their permissions) but not bytes.
    segments.sort_by_key(|s| s.vaddr);
    for w in segments.windows(2) {
        if w[1].vaddr < w[0].vaddr + w[0].mem_size {
            return Err(ElfError::OverlappingSegments { vaddr: w[1].vaddr });
        }
    }
    let entry = elf.header.e_entry.wrapping_add(base);
    if !segments.iter().any(|s| s.executable && (s.vaddr..s.vaddr + s.mem_size).contains(&entry)) {
        return Err(ElfError::EntryNotExecutable { entry });
    }
    let last = segments.last().unwrap();
    let image_end = (last.vaddr + last.mem_size).div_ceil(PAGE) * PAGE;
    let phoff = elf.header.e_phoff;
    let phdr = elf
        .program_headers
        .iter()
        .find(|ph| ph.p_type == PT_PHDR)
        .map(|ph| ph.p_vaddr.wrapping_add(base))
        .or_else(|| {
            segments.iter().find(|s| (s.file_offset..s.file_offset + s.file_size).contains(&phoff)).map(|s| s.vaddr + (phoff - s.file_offset))
        })
        .unwrap_or(0);
    Ok(LoadPlan { entry, segments, image_end, phdr, phent: elf.header.e_phentsize, phnum: elf.header.e_phnum })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal static ELF64: header + `phdrs` program headers, then `code` at file offset 0x1000.
    fn build(e_type: u16, machine: u16, entry: u64, phdrs: &[(u32, u32, u64, u64, u64, u64)]) -> Vec<u8> {
        let mut f = vec![0u8; 0x2000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // 64-bit
        f[5] = 1; // little endian
        f[6] = 1;
        f[16..18].copy_from_slice(&e_type.to_le_bytes());
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes()); // shentsize
        for (i, &(ptype, flags, off, vaddr, filesz, memsz)) in phdrs.iter().enumerate() {
            let p = 64 + i * 56;
            f[p..p + 4].copy_from_slice(&ptype.to_le_bytes());
            f[p + 4..p + 8].copy_from_slice(&flags.to_le_bytes());
            f[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            f[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
            f[p + 24..p + 32].copy_from_slice(&vaddr.to_le_bytes());
            f[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
            f[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
            f[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        f
    }

    const RX: u32 = 5;
    const RW: u32 = 6;
    const B: u64 = USER_BASE;

    fn good() -> Vec<u8> {
        build(ET_EXEC, EM_X86_64, B + 0x10, &[(PT_LOAD, RX, 0x1000, B, 0x100, 0x100), (PT_LOAD, RW, 0x1100, B + 0x1100, 0x10, 0x5000)])
    }

    #[test]
    fn accepts_a_static_executable() {
        let p = plan(&good()).unwrap();
        assert_eq!(p.entry, B + 0x10);
        assert_eq!(p.segments.len(), 2);
        assert!(p.segments[0].executable && !p.segments[0].writable);
        assert!(p.segments[1].writable);
        assert_eq!(p.image_end, B + 0x7000);
        // The headers are not in a loaded file range here (the first segment starts at 0x1000).
        assert_eq!((p.phdr, p.phent, p.phnum), (0, 56, 2));
        let with_headers = build(ET_EXEC, EM_X86_64, B + 0x10, &[(PT_LOAD, RX, 0, B, 0x1100, 0x1100)]);
        let p = plan(&with_headers).unwrap();
        assert_eq!(p.phdr, B + 64, "the headers follow the ELF header in the first loaded page");
    }

    #[test]
    fn a_static_pie_program_goes_at_the_pie_base() {
        // gcc -static-pie: ET_DYN linked at 0, a dynamic section (its own relocations), no interpreter.
        let f = build(ET_DYN, EM_X86_64, 0x10, &[(PT_LOAD, RX, 0, 0, 0x1100, 0x1100), (PT_LOAD, RW, 0x1100, 0x2100, 0x10, 0x100), (PT_DYNAMIC, RW, 0x1100, 0x2100, 0x10, 0x10)]);
        let p = plan(&f).unwrap();
        assert_eq!((p.entry, p.segments[0].vaddr, p.segments[1].vaddr, p.phdr), (PIE_BASE + 0x10, PIE_BASE, PIE_BASE + 0x2100, PIE_BASE + 64));
        assert_eq!(p.image_end, PIE_BASE + 0x3000);
        // A static ET_EXEC with a dynamic section is something else (and refused).
        let exec = build(ET_EXEC, EM_X86_64, B + 0x10, &[(PT_LOAD, RX, 0, B, 0x1100, 0x1100), (PT_DYNAMIC, RW, 0x1100, B + 0x2100, 0x10, 0x10)]);
        assert_eq!(plan(&exec), Err(ElfError::NotStaticExecutable));
    }

    #[test]
    fn refuses_hostile_or_foreign_files() {
        let load = |ph| build(ET_EXEC, EM_X86_64, B + 0x10, &[ph]);
        assert_eq!(plan(b"hello"), Err(ElfError::Parse));
        assert_eq!(plan(&[]), Err(ElfError::Parse));
        assert_eq!(plan(&good()[..40]), Err(ElfError::Parse));
        assert_eq!(plan(&build(ET_EXEC, 3, B, &[(PT_LOAD, RX, 0x1000, B, 1, 1)])), Err(ElfError::NotX86_64 { machine: 3 }));
        // A relocatable object (ET_REL) is not a program.
        assert_eq!(plan(&build(1, EM_X86_64, B, &[(PT_LOAD, RX, 0x1000, B, 1, 1)])), Err(ElfError::NotStaticExecutable));
        assert_eq!(plan(&build(ET_EXEC, EM_X86_64, B, &[(6, 4, 64, B, 56, 56)])), Err(ElfError::NoLoadableSegment));
        // The null page (below 64 KiB), kernel addresses, wrap-around.
        assert_eq!(plan(&load((PT_LOAD, RX, 0x1000, 0x1000, 1, 1))), Err(ElfError::SegmentOutsideUserSpace { vaddr: 0x1000 }));
        let kernel = questv_arch::paging::KERNEL_BASE + 0x10_0000;
        assert_eq!(plan(&load((PT_LOAD, RX, 0x1000, kernel, 1, 1))), Err(ElfError::SegmentOutsideUserSpace { vaddr: kernel }));
        assert_eq!(plan(&load((PT_LOAD, RX, 0x1000, u64::MAX - 0xfff, 1, 0x2000))), Err(ElfError::SegmentOutsideUserSpace { vaddr: u64::MAX - 0xfff }));
        assert_eq!(plan(&load((PT_LOAD, RX, 0x1000, USER_END - 0x1000, 1, 0x2000))), Err(ElfError::SegmentOutsideUserSpace { vaddr: USER_END - 0x1000 }));
        // File data beyond the file, or wrapping.
        assert_eq!(plan(&load((PT_LOAD, RX, 0x1000, B, 0x10_0000, 0x10_0000))), Err(ElfError::FileRangeOutsideFile { offset: 0x1000 }));
        assert_eq!(plan(&load((PT_LOAD, RX, u64::MAX, B + 0xfff, 2, 2))).is_err(), true);
        assert_eq!(plan(&load((PT_LOAD, RX, 0x1000, B, 0x20, 0x10))), Err(ElfError::FileSizeExceedsMemSize));
        assert_eq!(plan(&load((PT_LOAD, RX, 0x1001, B, 1, 1))), Err(ElfError::MisalignedSegment { vaddr: B }));
        assert_eq!(plan(&load((PT_LOAD, RX, 0x1000, B, 1, 1 << 40))), Err(ElfError::ImageTooLarge));
        // Entry outside executable code.
        assert_eq!(plan(&build(ET_EXEC, EM_X86_64, B + 0x10, &[(PT_LOAD, RW, 0x1000, B, 0x100, 0x100)])), Err(ElfError::EntryNotExecutable { entry: B + 0x10 }));
        // Two segments claiming the same bytes.
        let overlap = build(ET_EXEC, EM_X86_64, B + 0x10, &[(PT_LOAD, RX, 0x1000, B, 0x100, 0x100), (PT_LOAD, RW, 0x1080, B + 0x80, 0x10, 0x10)]);
        assert_eq!(plan(&overlap), Err(ElfError::OverlappingSegments { vaddr: B + 0x80 }));
        let interp = build(ET_EXEC, EM_X86_64, B + 0x10, &[(PT_INTERP, 4, 0x1000, B, 0x10, 0x10), (PT_LOAD, RX, 0x1000, B, 0x100, 0x100)]);
        assert!(matches!(plan(&interp), Err(ElfError::DynamicallyLinked { .. })), "{:?}", plan(&interp));
    }

    #[test]
    fn says_why_a_foreign_program_cannot_run() {
        let mut f = good();
        f[4] = 1; // ELFCLASS32
        assert_eq!(plan(&f), Err(ElfError::Not64Bit));
        let mut f = good();
        f[5] = 2; // big-endian
        assert_eq!(plan(&f), Err(ElfError::BigEndian));
        let mut f = good();
        f[18..20].copy_from_slice(&183u16.to_le_bytes()); // AArch64
        assert_eq!(plan(&f), Err(ElfError::NotX86_64 { machine: 183 }));
        assert_eq!(alloc::format!("{}", ElfError::NotX86_64 { machine: 183 }), "is built for ELF machine 183 (AArch64), not x86-64");
        let dynamic = ElfError::DynamicallyLinked { interpreter: String::from("/lib64/ld-linux-x86-64.so.2") };
        assert_eq!(alloc::format!("{dynamic}"), "is dynamically linked (needs /lib64/ld-linux-x86-64.so.2): questv runs static binaries");
    }

    #[test]
    fn segments_may_share_a_page_but_not_bytes() {
        // data then bss in the same page, as linkers emit them
        let f = build(ET_EXEC, EM_X86_64, B + 0x10, &[(PT_LOAD, RX, 0x1000, B, 0x100, 0x100), (PT_LOAD, RW, 0x1100, B + 0x1100, 0x10, 0x10), (PT_LOAD, RW, 0x1110, B + 0x1110, 0, 0x40)]);
        let p = plan(&f).unwrap();
        assert_eq!(p.segments.len(), 3);
        assert_eq!(p.image_end, B + 0x2000);
    }

    #[test]
    fn never_panics_on_mutated_input() {
        // Flip bytes of a good file one at a time and truncate it: every result is Ok or a clean error.
        let g = good();
        for i in 0..200 {
            for v in [0x00, 0xff, 0x80] {
                let mut m = g.clone();
                m[i] = v;
                let _ = plan(&m);
            }
        }
        for n in 0..g.len() {
            let _ = plan(&g[..n]);
        }
    }
}
