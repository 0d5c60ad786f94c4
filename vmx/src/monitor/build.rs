//! Building a sandbox (paper §3.2): the per-core memory slice, a pristine copy of the kernel and the ramdisk in
//! it, its second-stage table (EPT or NPT: the backend's format, one layout), and the boot information it
//! starts from; then each core's launch configuration (the backend adds its own control pages).

use super::layout::{host_view, GUEST_MBI_FROM_TOP, GUEST_MODULES_FROM_TOP, LOW_ALIAS, XAPIC_GPA};
use super::nic::nic_role;
use super::state::{apic_access, policy_of, state, ApicAccess};
use super::tables::{self, MonitorPool, SandboxTables};
use crate::backend::{self, GuestStart, LaunchConfig, PermissionMaps, RunSettings};
use crate::bootinfo::{self, Module};
use crate::partition::{Plan, Slice};
use crate::recovery::Policy;
use crate::stage2::{MemType, Perms, Stage2};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use questv_abi::boot::{AttackTargets, NicArgs, SandboxArgs};
use questv_abi::hypercall::{SHARED_GPA, SHARED_SIZE};
use questv_arch::paging::PAGE_SIZE;
use questv_arch::{cpu, lapic};
use questv_kernel::{smp, time};

/// Load the kernel ELF's segments at their physical addresses inside the slice starting at `host_base`.
/// Returns the entry point and the page ranges of the read-only segments (text, rodata) with their
/// permissions, which the EPT enforces (paper §3.7: a sandbox cannot patch its own kernel text).
fn load_kernel(elf: &[u8], host_base: u64, slice: u64) -> Result<(u32, Vec<(u64, u64, Perms)>), String> {
    let e = goblin::elf::Elf::parse(elf).map_err(|e| format!("kernel module is not an ELF: {e}"))?;
    let mut read_only = Vec::new();
    for ph in e.program_headers.iter().filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD) {
        ph.p_paddr.checked_add(ph.p_memsz).filter(|&end| end <= slice.min(LOW_ALIAS)).ok_or("kernel segment outside the slice's low part")?;
        let file = elf.get(ph.p_offset as usize..(ph.p_offset + ph.p_filesz) as usize).ok_or("kernel segment beyond file")?;
        // SAFETY: the destination lies inside this sandbox's slice, which the monitor owns and nothing uses yet.
        unsafe {
            let dst = questv_arch::paging::phys_to_virt(host_base + ph.p_paddr) as *mut u8;
            core::ptr::copy_nonoverlapping(file.as_ptr(), dst, file.len());
            core::ptr::write_bytes(dst.add(file.len()), 0, (ph.p_memsz - ph.p_filesz) as usize);
        }
        if !ph.is_write() {
            // Whole pages only: a page shared with a writable segment stays writable.
            let start = ph.p_paddr.div_ceil(PAGE_SIZE) * PAGE_SIZE;
            let end = (ph.p_paddr + ph.p_memsz) / PAGE_SIZE * PAGE_SIZE;
            let perms = if ph.is_executable() { Perms::RX } else { Perms::R };
            if end > start {
                read_only.push((start, end, perms));
            }
        }
    }
    let entry = u32::try_from(e.header.e_entry).map_err(|_| String::from("kernel entry above 4 GiB"))?;
    Ok((entry, read_only))
}

/// Copy `data` to guest-physical `gpa` of the slice at `host_base` (within one of its two parts).
fn put(host_base: u64, gpa: u64, data: &[u8]) {
    // SAFETY: callers keep [gpa, gpa + len) inside the slice's guest-physical ranges.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), host_view(host_base, gpa) as *mut u8, data.len()) };
}

/// What every (re)build of a sandbox needs, fixed at the first one.
pub(super) struct BuildInfo {
    pub(super) slices: Vec<Slice>,
    pub(super) shared_start: u64,
    /// Each sandbox's program and arguments, and the VCPUs it creates at start (by sandbox).
    runs: Vec<Option<String>>,
    vcpus: Vec<Option<String>>,
    /// Control block (VMCS/VMCB) per sandbox: the `monitor` attack's target.
    control_pages: Vec<u64>,
    attack_test: bool,
}

pub(super) static BUILD: spin::Once<BuildInfo> = spin::Once::new();

/// Zero the whole slice.
pub(super) fn scrub_slice(s: &Slice) {
    // SAFETY: the slice was taken from the frame allocator for this sandbox (page aligned), whose guest is not
    // running.
    unsafe { cpu::zero_qwords(questv_arch::paging::phys_to_virt(s.host_base), s.size) };
}

/// Load the pristine kernel and the ramdisk into a scrubbed slice, noting its read-only ranges in the sandbox's
/// state. Returns the entry point, the read-only kernel ranges and the modules.
pub(super) fn fill_slice(s: &Slice) -> Result<(u32, Vec<(u64, u64, Perms)>, Vec<Module<'static>>), String> {
    let kernel = questv_kernel::ramdisk::find("kernel").ok_or("no `kernel` module: the runner loads the image twice in VT mode")?;
    let (entry, read_only) = load_kernel(kernel, s.host_base, s.size)?;
    // What the monitor may not write on the sandbox's behalf either (RESTORE).
    state(s.sandbox).read_only = read_only.iter().map(|r| (r.0, r.1)).collect();
    let top = s.host_base + s.size; // guest-physical end of the slice (its high part is at its host address)
    // The ramdisk, minus the kernel itself.
    let mut gpa = top - GUEST_MODULES_FROM_TOP;
    let mut modules = Vec::new();
    for name in questv_kernel::ramdisk::names().filter(|n| *n != "kernel") {
        let bytes = questv_kernel::ramdisk::find(name).unwrap();
        if gpa + bytes.len() as u64 > top - GUEST_MBI_FROM_TOP {
            return Err(String::from("ramdisk too large for the sandbox module area"));
        }
        put(s.host_base, gpa, bytes);
        modules.push(Module { start: gpa as u32, end: (gpa + bytes.len() as u64) as u32, name });
        gpa = (gpa + bytes.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    }
    Ok((entry, read_only, modules))
}

/// Build the sandbox's second stage into `tables`: the slice at guest-physical 0 (4 KiB pages below LOW_ALIAS
/// so kernel text and rodata can be read-only), the shared region at SHARED_GPA, on xAPIC machines the APIC
/// page, for a NIC sharer the NIC's window and DMA region. Nothing else: not the monitor, not the other slices,
/// not any table (all allocated from monitor memory). Channels are mapped when opened.
pub(super) fn build_stage2(s: &Slice, read_only: &[(u64, u64, Perms)], shared_start: u64, m: &mut SandboxTables) -> Result<Stage2, String> {
    let arch = backend::arch();
    let apic = apic_access().expect("APIC access chosen");
    let err = |e| format!("{} table: {e:?}", arch.name());
    let mut st2 = Stage2::new(m, arch.stage2_format()).map_err(err)?;
    st2.map_range(m, 0, s.host_base, LOW_ALIAS, Perms::RWX, MemType::WriteBack, false).map_err(err)?;
    for &(start, end, perms) in read_only {
        for page in (start..end).step_by(PAGE_SIZE as usize) {
            st2.protect(m, page, perms).map_err(err)?;
        }
    }
    let high = s.host_base + LOW_ALIAS;
    st2.map_range(m, high, high, s.size - LOW_ALIAS, Perms::RWX, MemType::WriteBack, true).map_err(err)?;
    // Read-only: only the monitor writes the info page (a writable region would let any two sandboxes talk
    // outside the channel policy, or rewrite the directory the others read).
    st2.map_range(m, SHARED_GPA, shared_start, SHARED_SIZE, Perms::R, MemType::WriteBack, false).map_err(err)?;
    match apic {
        ApicAccess::X2apic => {}
        ApicAccess::XapicTrapped => st2.map_4k(m, XAPIC_GPA, lapic::xapic_base(), Perms::R, MemType::Uncacheable).map_err(err)?,
        ApicAccess::XapicPassthrough => st2.map_4k(m, XAPIC_GPA, lapic::xapic_base(), Perms::RW, MemType::Uncacheable).map_err(err)?,
    }
    // A sharer of the NIC: its register window (uncached) and the DMA region (write-back), both at their host
    // addresses, since descriptors carry bus addresses. Only the sharers have them. The window is read-only but
    // for the two tail pages (the monitor programmed the device; a write elsewhere exits and is refused).
    if let Some((j, g)) = nic_role(s.sandbox) {
        let window = questv_drivers::e1000::reg::WINDOW;
        let region = questv_drivers::e1000::layout::REGION;
        st2.map_range(m, g.nic.mmio, g.nic.mmio, window, Perms::R, MemType::Uncacheable, false).map_err(err)?;
        // (Read-only too while the monitor guards them: a sandbox rebuilt then must not bypass the guard.)
        for page in questv_drivers::e1000::SHARER_WRITABLE_PAGES {
            st2.protect(m, g.nic.mmio + u64::from(page), super::nic_guard::tail_page_perms()).map_err(err)?;
        }
        // The lock claims: its own writable, the other sharers' read-only (it must see them to wait its turn).
        for k in 0..g.sharer_count() {
            let page = g.claims + 4096 * k as u64;
            st2.map_4k(m, page, page, if k == j { Perms::RW } else { Perms::R }, MemType::WriteBack).map_err(err)?;
        }
        st2.map_range(m, g.nic.dma, g.nic.dma, region, Perms::RW, MemType::WriteBack, false).map_err(err)?;
    }
    Ok(st2)
}

/// The sandbox kernel's command line and boot information, written into its slice. Returns the boot
/// information's guest-physical address.
pub(super) fn write_boot_info(s: &Slice, b: &BuildInfo, modules: &[Module], stage2_root: u64, incarnation: u32) -> u64 {
    let top = s.host_base + s.size;
    // The heartbeat page (HEARTBEAT_GPA) lies in the reserved 0x9F000–0x100000 hole.
    let memory = [
        (0, 0x9F000, bootinfo::MEMORY_AVAILABLE),
        (0x9F000, 0x10_0000 - 0x9F000, bootinfo::MEMORY_RESERVED),
        (0x10_0000, LOW_ALIAS - 0x10_0000, bootinfo::MEMORY_AVAILABLE),
        (s.host_base + LOW_ALIAS, s.size - LOW_ALIAS, bootinfo::MEMORY_AVAILABLE),
    ];
    let mbi_gpa = top - GUEST_MBI_FROM_TOP;
    // Its own policy (the kernel checkpoints its services' state only if it is recovered at all).
    let policy = policy_of(s.sandbox);
    let args = SandboxArgs {
        sandbox: s.sandbox,
        shared: SHARED_GPA,
        tsc_hz: time::tsc_hz(),
        wall_ns: time::wall_at_tsc0(),
        lapic_hz: smp::lapic_timer_hz(),
        incarnation,
        recovery: (policy != Policy::None).then(|| policy.name()),
        other_cores: None,
        // The monitor programmed the NIC before any sandbox ran: a sharer only joins it (rejoins after a recovery).
        nic: nic_role(s.sandbox).map(|(j, g)| NicArgs { mmio: g.nic.mmio, dma: g.nic.dma, index: j as u64, claims: g.claims }),
        // Targets for the attack hook: the next sandbox's slice, this sandbox's control block (monitor
        // memory), its second-stage root.
        attack: b.attack_test.then(|| AttackTargets {
            peer: b.slices[(s.sandbox as usize + 1) % b.slices.len()].host_base,
            vmcs: b.control_pages[s.sandbox as usize],
            stage2: stage2_root,
        }),
    };
    // A sandbox on several cores: its kernel starts the others (their APIC ids).
    let others: Vec<String> = super::cores::other_cores(s.sandbox).iter().map(|&c| format!("{}", smp::apic_id(c))).collect();
    let others = others.join(",");
    let args = SandboxArgs { other_cores: (!others.is_empty()).then_some(others.as_str()), ..args };
    let mut cmdline = format!("mode=vt {args}");
    if let Some(v) = b.vcpus.get(s.sandbox as usize).and_then(|v| v.as_ref()) {
        cmdline.push_str(" vcpus=");
        cmdline.push_str(v);
    }
    if let Some(r) = b.runs.get(s.sandbox as usize).and_then(|r| r.as_ref()) {
        cmdline.push_str(" run=");
        cmdline.push_str(r);
    }
    let mbi = bootinfo::build(&cmdline, &memory, modules);
    put(s.host_base, mbi_gpa, &mbi);
    mbi_gpa
}

/// Build every planned sandbox and its core's launch configuration (on the BSP, before any sandbox runs).
pub(super) fn prepare(plan: &Plan, runs: &[Option<String>], vcpus: &[Option<String>], settings: RunSettings) -> Result<Vec<LaunchConfig>, String> {
    let mut pool = MonitorPool::new()?;
    // SAFETY: pool pages are zeroed, contiguous monitor pages, in no second-stage table.
    let maps = unsafe { PermissionMaps::build(settings.arch(), &mut |n| pool.pages(n))? };
    let mut control_pages = Vec::new();
    for _ in &plan.slices {
        control_pages.push(pool.pages(1)?);
    }
    let build = BuildInfo {
        slices: plan.slices.clone(),
        shared_start: plan.shared.start,
        runs: runs.to_vec(),
        vcpus: vcpus.to_vec(),
        control_pages,
        // Only a run the test layer claims as an attack test gets monitor addresses to aim at.
        attack_test: runs.iter().any(|r| questv_kernel::hooks::wants_attack_targets(r.as_deref())),
    };
    let (mut configs, mut roots, mut all_tables) = (Vec::new(), Vec::new(), Vec::new());
    for s in &plan.slices {
        let mut used = Vec::new();
        let (config, root) = prepare_sandbox(s, &build, &settings, maps, &mut pool, &mut used)?;
        configs.push(config);
        roots.push(root);
        all_tables.push(used);
    }
    // Another core of a sandbox runs under its first core's second stage, with a control block of its own,
    // and starts as an application processor (real mode at its start-up IPI's page).
    for s in &plan.slices {
        let first = super::cores::sandbox_of(s.sandbox);
        if first != s.sandbox {
            let start = GuestStart { control_page: build.control_pages[s.sandbox as usize], stage2_root: roots[first as usize], entry: 0, rax: 0, rbx: 0, sipi: true };
            configs[s.sandbox as usize] = LaunchConfig::new(&settings, maps, start, &mut |n| pool.pages(n))?;
        }
    }
    BUILD.call_once(|| build);
    tables::install(pool, all_tables, roots);
    Ok(configs)
}

/// Build one sandbox (its second stage's table pages recorded in `used`); its launch configuration and
/// second-stage root.
fn prepare_sandbox(s: &Slice, build: &BuildInfo, settings: &RunSettings, maps: PermissionMaps, pool: &mut MonitorPool, used: &mut Vec<u64>) -> Result<(LaunchConfig, u64), String> {
    scrub_slice(s);
    let (entry, read_only, modules) = fill_slice(s)?;
    let st2 = build_stage2(s, &read_only, build.shared_start, &mut SandboxTables::fresh(pool, used))?;
    let mbi_gpa = write_boot_info(s, build, &modules, st2.root(), 0);
    let control_page = build.control_pages[s.sandbox as usize];
    let (rax, rbx) = (0x36D7_6289, mbi_gpa as u32);
    let start = GuestStart { control_page, stage2_root: st2.root(), entry, rax, rbx, sipi: false };
    let config = LaunchConfig::new(settings, maps, start, &mut |n| pool.pages(n))?;
    log::info!(
        "sandbox {}: {} MiB at host 0x{:x}, entry 0x{:x}, {} module(s), {} read-only kernel page(s)",
        s.sandbox, s.size >> 20, s.host_base, entry, modules.len(),
        read_only.iter().map(|r| (r.1 - r.0) / PAGE_SIZE).sum::<u64>()
    );
    Ok((config, st2.root()))
}
