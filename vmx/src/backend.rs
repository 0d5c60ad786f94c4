//! Which hardware runs the monitor, chosen once at boot from CPUID; everything the policy needs that differs
//! between VMX and SVM (the run's checked settings, the permission-map layout, each core's launch
//! configuration and the launch itself); and the operations the policy performs on the current exit,
//! dispatched to that backend. The policy (`crate::monitor`) is written once against this module; `intel`
//! (VMX + EPT) and `amd` (SVM + NPT) only translate.

use crate::stage2::{Format, Stage2};
use crate::{amd, intel, policy};
use alloc::format;
use alloc::string::String;
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};
use questv_arch::paging::{phys_to_virt, PAGE_SIZE};

pub use crate::exit::{set_exit_handler, ExitHandler, GuestRegs, GuestState, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Intel VMX with extended page tables.
    Vmx,
    /// AMD SVM with nested page tables.
    Svm,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Vmx => "vmx",
            Arch::Svm => "svm",
        }
    }

    pub fn stage2_format(self) -> Format {
        match self {
            Arch::Vmx => Format::Ept,
            Arch::Svm => Format::Npt,
        }
    }
}

/// What the VT build tells a user whose CPU (or emulator) can run neither backend.
pub const NEEDS_VIRT_MESSAGE: &str = "VT mode needs Intel VMX with EPT or AMD SVM with nested paging";

/// Why neither backend can run here (each backend's own reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable {
    pub vmx: intel::caps::Unavailable,
    pub svm: amd::caps::Unavailable,
}

/// The capabilities of the backend that will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caps {
    Vmx(intel::caps::VmxCaps),
    Svm(amd::caps::SvmCaps),
}

impl Caps {
    pub fn arch(&self) -> Arch {
        match self {
            Caps::Vmx(_) => Arch::Vmx,
            Caps::Svm(_) => Arch::Svm,
        }
    }
}

/// Pick the backend from the raw capabilities (pure): VMX if usable, else SVM.
pub fn choose(vmx: &intel::caps::RawCaps, svm: &amd::caps::RawCaps) -> Result<Caps, Unavailable> {
    match (intel::caps::evaluate(vmx), amd::caps::evaluate(svm)) {
        (Ok(c), _) => Ok(Caps::Vmx(c)),
        (_, Ok(c)) => Ok(Caps::Svm(c)),
        (Err(vmx), Err(svm)) => Err(Unavailable { vmx, svm }),
    }
}

const NONE: u8 = 0;
static ARCH: AtomicU8 = AtomicU8::new(NONE);

/// Detect and fix the backend for this boot (BSP, before any sandbox starts).
pub fn detect() -> Result<Caps, Unavailable> {
    let caps = choose(&intel::caps::read(), &amd::caps::read())?;
    ARCH.store(caps.arch() as u8 + 1, Ordering::SeqCst);
    Ok(caps)
}

/// The backend chosen by [`detect`].
pub fn arch() -> Arch {
    match ARCH.load(Ordering::Relaxed) {
        1 => Arch::Vmx,
        2 => Arch::Svm,
        _ => panic!("monitor backend used before detect()"),
    }
}

/// The backend's settings fixed for the whole run: its capabilities and, on VMX, the checked controls and the
/// VMX-preemption timer's start value (the watchdog).
#[derive(Clone, Copy)]
pub struct RunSettings {
    caps: Caps,
    vmx: Option<VmxSettings>,
}

#[derive(Clone, Copy)]
struct VmxSettings {
    controls: intel::controls::Controls,
    preemption_timer: Option<u32>,
}

/// Why this CPU cannot run the monitor's settings.
#[derive(Debug, Clone, Copy)]
pub enum SettingsError {
    VmxControls(intel::VmxError),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SettingsError::VmxControls(e) => write!(f, "this CPU cannot run the monitor's VMCS controls: {e:?}"),
        }
    }
}

impl RunSettings {
    /// Check what the monitor needs against this CPU. `watchdog`: the watchdog period in TSC cycles, if on (VMX
    /// arms the preemption timer for it).
    pub fn new(caps: Caps, watchdog: Option<u64>) -> Result<RunSettings, SettingsError> {
        let vmx = match caps {
            Caps::Vmx(_) => {
                let controls = intel::controls::controls(watchdog.is_some()).map_err(SettingsError::VmxControls)?;
                let rate = |cycles: u64| (cycles >> intel::controls::preemption_timer_rate()).clamp(1, u64::from(u32::MAX)) as u32;
                Some(VmxSettings { controls, preemption_timer: watchdog.map(rate) })
            }
            Caps::Svm(_) => None,
        };
        Ok(RunSettings { caps, vmx })
    }

    pub fn arch(&self) -> Arch {
        self.caps.arch()
    }

    /// The `RESULT` line that records the hardware set-up: its name and its text.
    pub fn report(&self) -> (&'static str, String) {
        match (self.caps, self.vmx) {
            (Caps::Vmx(_), Some(VmxSettings { controls: c, .. })) => {
                ("vmcs", format!("pin=0x{:x} proc=0x{:x} proc2=0x{:x} exit=0x{:x} entry=0x{:x}", c.pin, c.proc, c.proc2, c.exit, c.entry))
            }
            (Caps::Svm(c), _) => {
                let (misc2, misc1) = (amd::vmcb::intercept::MISC2, amd::vmcb::intercept::MISC1);
                ("vmcb", format!("intercepts=0x{misc2:08x}_{misc1:08x} nested_paging=1 asids={} next_rip_save={}", c.nasid, u8::from(c.next_rip_save)))
            }
            (Caps::Vmx(_), None) => unreachable!("VMX settings without controls"),
        }
    }

    /// The start value of the backend's own watchdog timer, if it has one and the watchdog is on (the
    /// VMX-preemption timer). SVM has none: the policy needs another tick for the watchdog.
    pub fn watchdog_timer(&self) -> Option<u32> {
        self.vmx.and_then(|v| v.preemption_timer)
    }
}

/// The policy's MSR and port permissions in the backend's format, shared read-only by every core.
#[derive(Clone, Copy)]
pub struct PermissionMaps {
    msr: u64,
    io: u64,
}

impl PermissionMaps {
    /// Build the maps for `arch` in pages taken from `pages(n)` (VMX: the MSR bitmap, then I/O bitmaps A and B;
    /// SVM: the 8 KiB MSR permission map, then the 12 KiB I/O permission map).
    ///
    /// # Safety
    /// `pages(n)` returns the physical address of `n` zeroed, contiguous pages of RAM that belong to the caller
    /// and that no second-stage table maps.
    pub unsafe fn build<E>(arch: Arch, pages: &mut impl FnMut(u64) -> Result<u64, E>) -> Result<PermissionMaps, E> {
        Ok(match arch {
            Arch::Vmx => {
                let (msr, io) = (pages(1)?, pages(2)?);
                let (msr_at, io_at) = (phys_to_virt(msr), phys_to_virt(io));
                // SAFETY: the caller's contract: freshly allocated, zeroed, contiguous pages of ours.
                unsafe {
                    policy::build_msr_bitmap(&mut *(msr_at as *mut [u8; 4096]));
                    policy::build_io_bitmaps(&mut *(io_at as *mut [u8; 4096]), &mut *((io_at + PAGE_SIZE) as *mut [u8; 4096]), policy::GRANTED_PORTS);
                }
                PermissionMaps { msr, io }
            }
            Arch::Svm => {
                let (msr, io) = (pages(2)?, pages(3)?);
                // SAFETY: as above.
                unsafe {
                    policy::build_msr_permission_map(&mut *(phys_to_virt(msr) as *mut [u8; 8192]));
                    policy::build_io_permission_map(&mut *(phys_to_virt(io) as *mut [u8; 12288]), policy::GRANTED_PORTS);
                }
                PermissionMaps { msr, io }
            }
        })
    }
}

/// What the policy decides for one core's start: its control block (the VMCS or VMCB page), the root of its
/// sandbox's second stage, and where and with which registers it starts: a sandbox's first core as GRUB leaves
/// a multiboot2 kernel (`entry`, EAX, EBX: the hand-over), its other cores (`sipi`) as a start-up IPI leaves
/// an application processor — real mode at the page its sandbox named ([`set_start_vector`]).
pub struct GuestStart {
    pub control_page: u64,
    pub stage2_root: u64,
    pub entry: u32,
    pub rax: u32,
    pub rbx: u32,
    pub sipi: bool,
}

/// Each core's start-up vector: the real-mode page (number) the last start-up IPI its sandbox sent it named.
static START_VECTOR: [AtomicU8; questv_arch::percpu::MAX_CPUS] = [const { AtomicU8::new(0) }; questv_arch::percpu::MAX_CPUS];

/// Core `core` starts (its next launch with `sipi`) in real mode at `vector` << 12.
pub fn set_start_vector(core: u32, vector: u8) {
    START_VECTOR[core as usize].store(vector, Ordering::SeqCst);
}

/// The calling core's start-up vector (the backends read it when they set up a `sipi` launch).
pub(crate) fn start_vector() -> u8 {
    START_VECTOR[questv_arch::percpu::cpu_index() as usize].load(Ordering::SeqCst)
}

/// What one core launches: the backend's configuration for its sandbox.
#[derive(Clone, Copy)]
pub enum LaunchConfig {
    Vmx(intel::vmcs::LaunchConfig),
    Svm(amd::vmcb::LaunchConfig),
}

impl LaunchConfig {
    /// One core's configuration. The backend takes the pages only it needs from `pages(n)` (VMX: the exit stack,
    /// then the VMXON region; SVM: the host save area, then the host-state page).
    pub fn new<E>(settings: &RunSettings, maps: PermissionMaps, start: GuestStart, pages: &mut impl FnMut(u64) -> Result<u64, E>) -> Result<LaunchConfig, E> {
        let GuestStart { control_page, stage2_root, entry, rax, rbx, sipi } = start;
        Ok(match (settings.caps, settings.vmx) {
            (Caps::Vmx(_), Some(vmx)) => {
                let stack = pages(4)?;
                LaunchConfig::Vmx(intel::vmcs::LaunchConfig {
                    vmxon: pages(1)?,
                    vmcs: control_page,
                    msr_bitmap: maps.msr,
                    io_bitmap_a: maps.io,
                    io_bitmap_b: maps.io + PAGE_SIZE,
                    eptp: Stage2::from_root(stage2_root, Format::Ept).eptp(),
                    entry,
                    rax,
                    rbx,
                    sipi,
                    // The pool hands out physical pages; the CPU runs on the stack at its virtual address.
                    host_stack_top: phys_to_virt(stack + 4 * PAGE_SIZE),
                    host_tr_base: 0,
                    controls: vmx.controls,
                    preemption_timer: vmx.preemption_timer,
                })
            }
            (Caps::Svm(caps), _) => LaunchConfig::Svm(amd::vmcb::LaunchConfig {
                vmcb: control_page,
                host_save_area: pages(1)?,
                host_state: pages(1)?,
                msrpm: maps.msr,
                iopm: maps.io,
                ncr3: stage2_root,
                entry,
                rax,
                rbx,
                sipi,
                // Every core has its own TLB; one guest per core needs one ASID.
                asid: 1,
                caps,
            }),
            (Caps::Vmx(_), None) => unreachable!("VMX settings without controls"),
        })
    }
}

/// Why a launch failed, in the backend's own terms.
pub enum LaunchError {
    Vmx(intel::VmxError),
    Svm(amd::vmcb::SvmError),
}

impl fmt::Debug for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            LaunchError::Vmx(e) => fmt::Debug::fmt(e, f),
            LaunchError::Svm(e) => fmt::Debug::fmt(e, f),
        }
    }
}

/// Enter root mode on the calling core and launch its sandbox. Returns only if that fails. `host_tss`: this
/// core's TSS base (VMX loads it as the host's at every exit; SVM's VMSAVE/VMLOAD keep TR themselves).
///
/// # Safety
/// `cfg` comes from [`LaunchConfig::new`] with this run's settings; every page in it is a monitor frame (its
/// physical address) owned by this core (the permission maps shared read-only by all cores); interrupts are
/// off and stay off in root mode.
pub unsafe fn launch(cfg: LaunchConfig, host_tss: u64) -> LaunchError {
    match cfg {
        LaunchConfig::Vmx(mut cfg) => {
            cfg.host_tr_base = host_tss;
            // SAFETY: the caller's contract; capabilities and controls were checked (RunSettings::new).
            let err = unsafe {
                match intel::vmcs::enable(cfg.vmxon) {
                    Ok(()) => intel::vmcs::launch(&cfg),
                    Err(e) => e,
                }
            };
            LaunchError::Vmx(err)
        }
        LaunchConfig::Svm(cfg) => {
            // SAFETY: the caller's contract; SVM was checked (detect).
            let err = unsafe {
                amd::vmcb::enable(cfg.host_save_area);
                amd::vmcb::launch(&cfg)
            };
            LaunchError::Svm(err)
        }
    }
}

// Operations on the current exit. Only meaningful inside the exit handler on the exiting core (the VMX
// backend's VMCS is current there; the SVM backend's VMCB is this core's).

/// Resume after the instruction that caused this exit.
pub fn skip_instruction() {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::skip_instruction() },
        Arch::Svm => amd::vmcb::skip_instruction(),
    }
}

/// Move RIP on by `len` bytes (an instruction the monitor decoded and emulated).
pub fn advance_rip(len: u64) {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::advance_rip(len) },
        Arch::Svm => amd::vmcb::advance_rip(len),
    }
}

/// Resume the guest elsewhere: `rip`, `rsp`, `rflags`, nothing pending (the policy's component recovery).
pub fn redirect(rip: u64, rsp: u64, rflags: u64) {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::redirect(rip, rsp, rflags) },
        Arch::Svm => amd::vmcb::redirect(rip, rsp, rflags),
    }
}

/// Drop the exiting core's cached second-stage translations before the guest runs again (a mapping was
/// removed). A failed INVEPT stops the machine: running on with a stale translation would break isolation.
pub fn flush_stage2() {
    match arch() {
        // SAFETY: in the exit handler, in VMX root on this core, which launched its sandbox.
        Arch::Vmx => {
            if let Err(e) = unsafe { intel::vmcs::flush_stage2() } {
                panic!("INVEPT failed after removing a mapping: {e:?}");
            }
        }
        Arch::Svm => amd::vmcb::flush_stage2(),
    }
}

/// Inject #UD at the next entry.
pub fn inject_ud() {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::inject_ud() },
        Arch::Svm => amd::vmcb::inject_exception(6, None),
    }
}

/// Inject #GP(0) at the next entry.
pub fn inject_gp() {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::inject_gp() },
        Arch::Svm => amd::vmcb::inject_exception(13, Some(0)),
    }
}

/// Deliver the intercepted exception of this exit (vector, error code) to the guest at the next entry, as the
/// CPU would have without the intercept (VMX: also the DR6 bits of a #DB, which the CPU left to the monitor).
pub fn reflect_exception(vector: u8, error_code: Option<u32>) {
    match arch() {
        // SAFETY: in the exit handler of an exception exit with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::reflect_exception() },
        Arch::Svm => amd::vmcb::inject_exception(vector, error_code),
    }
}

pub fn guest_cpl() -> u8 {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::guest_cpl() },
        Arch::Svm => amd::vmcb::guest_cpl(),
    }
}

pub fn guest_state() -> GuestState {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::guest_state() },
        Arch::Svm => amd::vmcb::guest_state(),
    }
}

/// Whether the saved guest state is evidently the monitor's own (its RIP inside the SVM run routine, which
/// no sandbox executes); VMX keeps host and guest state apart in the VMCS, so there it never is.
pub fn saved_state_is_monitors(rip: u64) -> bool {
    match arch() {
        Arch::Vmx => false,
        Arch::Svm => amd::vmcb::in_run_routine(rip),
    }
}

/// The backend's own name for a raw exit code (for reports of exits the policy has no kind for).
pub fn raw_exit_name(code: u64) -> &'static str {
    match arch() {
        Arch::Vmx => intel::reason::name(code as u32),
        Arch::Svm => amd::vmcb::code::name(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmx_preferred_svm_otherwise() {
        let svm = amd::caps::RawCaps { ext_ecx: 1 << 2, vm_cr: 0, nasid: 16, features: 1 };
        let no_vmx = intel::caps::RawCaps::default();
        assert_eq!(choose(&no_vmx, &svm).map(|c| c.arch()), Ok(Arch::Svm));
        let none = choose(&no_vmx, &amd::caps::RawCaps::default()).unwrap_err();
        assert_eq!(none, Unavailable { vmx: intel::caps::Unavailable::NoVmx, svm: amd::caps::Unavailable::NoSvm });
        assert_eq!(Arch::Svm.stage2_format(), Format::Npt);
    }
}
