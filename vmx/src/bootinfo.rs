//! A multiboot2 boot information structure built by the monitor for a sandbox kernel, so the sandbox boots
//! through exactly the path GRUB uses (the same image, the same entry): command line, memory map of its slice,
//! and its copies of the ramdisk modules. Pure logic; the host tests parse the result with the `multiboot2`
//! crate the kernel itself uses.
// The module has no unsafe code; its test needs some to hand the bytes to the multiboot2 parser.
#![cfg_attr(not(test), forbid(unsafe_code))]

use alloc::vec::Vec;

pub const MEMORY_AVAILABLE: u32 = 1;
pub const MEMORY_RESERVED: u32 = 2;

pub struct Module<'a> {
    pub start: u32,
    pub end: u32,
    pub name: &'a str,
}

fn pad8(v: &mut Vec<u8>) {
    while v.len() % 8 != 0 {
        v.push(0);
    }
}

fn tag_header(v: &mut Vec<u8>, typ: u32, size: u32) {
    v.extend_from_slice(&typ.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
}

/// Serialise: `memory` is `(base, length, type)`; addresses are guest-physical.
pub fn build(cmdline: &str, memory: &[(u64, u64, u32)], modules: &[Module]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&[0u8; 8]); // total size, reserved: patched below
    tag_header(&mut v, 1, 8 + cmdline.len() as u32 + 1);
    v.extend_from_slice(cmdline.as_bytes());
    v.push(0);
    pad8(&mut v);
    for m in modules {
        tag_header(&mut v, 3, 16 + m.name.len() as u32 + 1);
        v.extend_from_slice(&m.start.to_le_bytes());
        v.extend_from_slice(&m.end.to_le_bytes());
        v.extend_from_slice(m.name.as_bytes());
        v.push(0);
        pad8(&mut v);
    }
    tag_header(&mut v, 6, 16 + 24 * memory.len() as u32);
    v.extend_from_slice(&24u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    for &(base, len, typ) in memory {
        v.extend_from_slice(&base.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&typ.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
    }
    pad8(&mut v);
    tag_header(&mut v, 0, 8);
    let total = v.len() as u32;
    v[..4].copy_from_slice(&total.to_le_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType, MemoryAreaTypeId};

    #[test]
    fn parses_back_with_the_kernels_parser() {
        let mem = [(0, 0x9F000, MEMORY_AVAILABLE), (0x9F000, 0x61000, MEMORY_RESERVED), (0x10_0000, 0x5F0_0000, MEMORY_AVAILABLE)];
        let mods = [Module { start: 0x500_0000, end: 0x500_1234, name: "init" }, Module { start: 0x500_2000, end: 0x500_3000, name: "forkwait" }];
        let bytes = build("mode=vt sandbox=2 run=forkwait 10", &mem, &mods);
        // multiboot2 requires 8-byte alignment: the bytes in a u64 buffer.
        let aligned: Vec<u64> = bytes.chunks(8).map(|c| {
            let mut word = [0u8; 8];
            word[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(word)
        }).collect();
        // SAFETY (test): `aligned` holds the whole boot information, 8-byte aligned, and outlives `mbi`.
        let mbi = unsafe { BootInformation::load(aligned.as_ptr() as *const BootInformationHeader) }.unwrap();
        assert_eq!(mbi.command_line_tag().unwrap().cmdline().unwrap(), "mode=vt sandbox=2 run=forkwait 10");
        let areas = mbi.memory_map_tag().unwrap().memory_areas();
        assert_eq!(areas.len(), 3);
        assert_eq!(areas[2].start_address(), 0x10_0000);
        assert_eq!(areas[2].size(), 0x5F0_0000);
        assert_eq!(areas[0].typ(), MemoryAreaTypeId::from(MemoryAreaType::Available));
        assert_eq!(areas[1].typ(), MemoryAreaTypeId::from(MemoryAreaType::Reserved));
        let m: Vec<_> = mbi.module_tags().collect();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].cmdline().unwrap(), "forkwait");
        assert_eq!((m[0].start_address(), m[0].end_address()), (0x500_0000, 0x500_1234));
        assert_eq!(mbi.total_size(), bytes.len());
    }
}
