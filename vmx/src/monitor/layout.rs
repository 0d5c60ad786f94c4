//! Guest-physical layout of a sandbox (paper §3.2): the first 16 MiB of its slice appear at guest-physical 0
//! (the kernel is linked at 1 MiB), the rest of the slice at its own host address. Every other guest-physical
//! address — the monitor, the other slices, every second-stage table — is simply absent, so touching it is a
//! violation rather than silent aliasing. The module area and the boot information sit at the slice's top.
#![forbid(unsafe_code)]

/// Size of the low part of a slice, seen at guest-physical 0.
pub(super) const LOW_ALIAS: u64 = 16 << 20;
/// The ramdisk's modules start this far below the slice's top.
pub(super) const GUEST_MODULES_FROM_TOP: u64 = 16 << 20;
/// The boot information starts this far below the slice's top.
pub(super) const GUEST_MBI_FROM_TOP: u64 = 64 << 10;
/// Guest-physical address of the xAPIC page (the sandboxes use the architectural default).
pub(super) const XAPIC_GPA: u64 = 0xFEE0_0000;

/// Host-physical address behind guest-physical `gpa` of the slice at `host_base`.
pub(super) fn host_of(host_base: u64, gpa: u64) -> u64 {
    if gpa < LOW_ALIAS {
        host_base + gpa
    } else {
        gpa
    }
}

/// Where the monitor reads and writes guest-physical `gpa` of the slice at `host_base`: the host-physical
/// address through the kernel's mapping of physical memory.
pub(super) fn host_view(host_base: u64, gpa: u64) -> u64 {
    questv_arch::paging::phys_to_virt(host_of(host_base, gpa))
}

/// The monitor's view ([`host_view`]) of the guest-physical range [gpa, gpa + len) of sandbox memory, if it lies wholly inside one
/// of the slice's two parts (never in the shared region, a channel or anything else).
pub(super) fn slice_range(host_base: u64, size: u64, gpa: u64, len: u64) -> Option<u64> {
    let end = gpa.checked_add(len)?;
    let high = host_base + LOW_ALIAS..host_base + size;
    if end <= LOW_ALIAS || (gpa >= high.start && end <= high.end) {
        Some(host_view(host_base, gpa))
    } else {
        None
    }
}
