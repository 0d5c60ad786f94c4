//! `/proc`, made on demand from the process table: what common programs read (ps, top, free, uptime, a
//! shell's `/dev/fd`): `self`, and per process `cmdline`, `comm`, `stat`, `status`, `exe`, `cwd`, `fd/`; and
//! `meminfo`, `cpuinfo`, `uptime`, `loadavg`, `mounts`, `stat`, `version`. Formats are Linux's (proc(5)); fields
//! questv does not keep are 0.
//!
//! Node ids (`GenId`): 0 the root, small numbers its files, `pid << 16 | entry` a process's directory and
//! files, `pid << 16 | FD_BIT | fd` its descriptor links.

use super::table::{State, TABLE};
use super::{cpu_of, Process};
use crate::fs::tmpfs::FileType;
use crate::fs::vfs::{GenId, Generated};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use questv_libc_shim::errno::*;

const SELF: GenId = 1;
const GLOBALS: [(GenId, &str); 7] = [(2, "meminfo"), (3, "cpuinfo"), (4, "uptime"), (5, "mounts"), (6, "stat"), (7, "loadavg"), (8, "version")];

const DIR: u64 = 1;
const PID_FILES: [(u64, &str, FileType); 7] = [
    (2, "cmdline", FileType::Regular),
    (3, "comm", FileType::Regular),
    (4, "stat", FileType::Regular),
    (5, "status", FileType::Regular),
    (6, "exe", FileType::Symlink),
    (7, "cwd", FileType::Symlink),
    (8, "fd", FileType::Directory),
];
const FD_BIT: u64 = 0x8000;

fn pid_of(id: GenId) -> u32 {
    (id >> 16) as u32
}

fn entry_of(id: GenId) -> u64 {
    id & 0xFFFF
}

pub struct ProcFs;

pub static PROCFS: ProcFs = ProcFs;

fn with_process<R>(pid: u32, f: impl FnOnce(&Process) -> R) -> Result<R, i64> {
    TABLE.lock().procs.get(&pid).map(f).ok_or(-ENOENT)
}

impl Generated for ProcFs {
    fn lookup(&self, dir: GenId, name: &str) -> Result<GenId, i64> {
        if dir == 0 {
            if name == "self" {
                return Ok(SELF);
            }
            if let Some((id, _)) = GLOBALS.iter().find(|g| g.1 == name) {
                return Ok(*id);
            }
            let pid: u32 = name.parse().map_err(|_| -ENOENT)?;
            if pid == 0 || name.starts_with('0') || pid > 0xFFFF_FFFF >> 16 {
                return Err(-ENOENT);
            }
            with_process(pid, |_| ())?;
            return Ok(u64::from(pid) << 16 | DIR);
        }
        let pid = pid_of(dir);
        match entry_of(dir) {
            DIR => {
                with_process(pid, |_| ())?;
                PID_FILES.iter().find(|e| e.1 == name).map(|e| u64::from(pid) << 16 | e.0).ok_or(-ENOENT)
            }
            8 => {
                let fd: u64 = name.parse().map_err(|_| -ENOENT)?;
                if fd >= FD_BIT {
                    return Err(-ENOENT);
                }
                let open = with_process(pid, |p| p.fs.lock().files.get(fd as i64).is_ok())?;
                if open { Ok(u64::from(pid) << 16 | FD_BIT | fd) } else { Err(-ENOENT) }
            }
            _ => Err(-ENOTDIR),
        }
    }

    fn parent(&self, node: GenId) -> Option<GenId> {
        match node {
            0 => None,
            n if n < 1 << 16 => Some(0),
            n if entry_of(n) == DIR => Some(0),
            n if entry_of(n) & FD_BIT != 0 => Some(u64::from(pid_of(n)) << 16 | 8),
            n => Some(u64::from(pid_of(n)) << 16 | DIR),
        }
    }

    fn kind(&self, node: GenId) -> Result<FileType, i64> {
        match node {
            0 => Ok(FileType::Directory),
            SELF => Ok(FileType::Symlink),
            n if n < 1 << 16 => GLOBALS.iter().find(|g| g.0 == n).map(|_| FileType::Regular).ok_or(-ENOENT),
            n => {
                with_process(pid_of(n), |_| ())?;
                match entry_of(n) {
                    DIR => Ok(FileType::Directory),
                    e if e & FD_BIT != 0 => Ok(FileType::Symlink),
                    e => PID_FILES.iter().find(|f| f.0 == e).map(|f| f.2).ok_or(-ENOENT),
                }
            }
        }
    }

    fn readlink(&self, node: GenId) -> Result<String, i64> {
        if node == SELF {
            return Ok(crate::sched::current_pid().to_string());
        }
        let pid = pid_of(node);
        match entry_of(node) {
            6 => with_process(pid, |p| p.exe.to_string()),
            // Kept by chdir (resolution runs under the tree's lock, which this must not take again).
            7 => with_process(pid, |p| p.fs.lock().cwd_path.clone()),
            e if e & FD_BIT != 0 => with_process(pid, |p| p.fs.lock().files.get((e & !FD_BIT) as i64).map(|f| f.path.clone()))?,
            _ => Err(-EINVAL),
        }
    }

    fn contents(&self, node: GenId) -> Result<Vec<u8>, i64> {
        let text = match node {
            2 => meminfo(),
            3 => cpuinfo(),
            4 => {
                let up = crate::time::cycles_to_ns(questv_arch::cpu::rdtsc());
                format!("{}.{:02} 0.00\n", up / 1_000_000_000, (up / 10_000_000) % 100)
            }
            5 => String::from("rootfs / tmpfs rw 0 0\nproc /proc proc rw,nosuid,nodev,noexec 0 0\n"),
            6 => {
                let n = TABLE.lock().procs.len();
                format!("cpu  0 0 0 0 0 0 0 0 0 0\nbtime {}\nprocesses {n}\nprocs_running 1\nprocs_blocked 0\n", boot_time_s())
            }
            7 => {
                let (n, last) = { let t = TABLE.lock(); (t.procs.len(), t.next_pid.saturating_sub(1)) };
                format!("0.00 0.00 0.00 1/{n} {last}\n")
            }
            8 => String::from("Linux version 6.1.0-questv (questv) #1 questv\n"),
            n => {
                let pid = pid_of(n);
                match entry_of(n) {
                    2 => return with_process(pid, |p| p.cmdline.to_vec()),
                    3 => with_process(pid, |p| format!("{}\n", comm(p)))?,
                    4 => with_process(pid, |p| stat_line(pid, p))?,
                    5 => with_process(pid, |p| status(pid, p))?,
                    _ => return Err(-EINVAL),
                }
            }
        };
        Ok(text.into_bytes())
    }

    fn open_file_link(&self, node: GenId) -> Option<(u32, i64)> {
        (node >= 1 << 16 && entry_of(node) & FD_BIT != 0).then(|| (pid_of(node), (entry_of(node) & !FD_BIT) as i64))
    }

    fn entries(&self, dir: GenId) -> Result<Vec<(String, GenId, FileType)>, i64> {
        let mut out = alloc::vec![(".".to_string(), dir, FileType::Directory), ("..".to_string(), self.parent(dir).unwrap_or(0), FileType::Directory)];
        match dir {
            0 => {
                for (id, name) in GLOBALS {
                    out.push((name.to_string(), id, FileType::Regular));
                }
                out.push(("self".to_string(), SELF, FileType::Symlink));
                let pids: Vec<u32> = TABLE.lock().procs.keys().copied().collect();
                for pid in pids {
                    out.push((pid.to_string(), u64::from(pid) << 16 | DIR, FileType::Directory));
                }
            }
            d if entry_of(d) == DIR => {
                let pid = pid_of(d);
                with_process(pid, |_| ())?;
                for (e, name, kind) in PID_FILES {
                    out.push((name.to_string(), u64::from(pid) << 16 | e, kind));
                }
            }
            d if entry_of(d) == 8 => {
                let pid = pid_of(d);
                let fds: Vec<i64> = with_process(pid, |p| p.fs.lock().files.iter().map(|(fd, _)| fd).collect())?;
                for fd in fds.into_iter().filter(|&fd| (fd as u64) < FD_BIT) {
                    out.push((fd.to_string(), u64::from(pid) << 16 | FD_BIT | fd as u64, FileType::Symlink));
                }
            }
            _ => return Err(-ENOTDIR),
        }
        Ok(out)
    }
}

/// The command name: the program's file name, at most 15 bytes (TASK_COMM_LEN).
fn comm(p: &Process) -> &str {
    let n = &*p.name;
    &n[..n.len().min(15)]
}

fn state_letter(p: &Process) -> char {
    match p.state {
        State::Zombie(_) => 'Z',
        State::Running if p.stopped => 'T',
        State::Running => 'S',
    }
}

/// Clock ticks (USER_HZ 100) from TSC cycles.
fn ticks(cycles: u64) -> u64 {
    crate::time::cycles_to_ns(cycles) / 10_000_000
}

fn boot_time_s() -> u64 {
    let now = questv_arch::cpu::rdtsc();
    crate::time::realtime_ns(now).unwrap_or(0).saturating_sub(crate::time::cycles_to_ns(now)) / 1_000_000_000
}

/// /proc/PID/stat: the 52 fields of proc(5).
fn stat_line(pid: u32, p: &Process) -> String {
    let (vsize, rss) = p.space.lock().as_ref().map_or((0, 0), |s| s.sizes(&mut crate::mm::kmem::KernelMem));
    let threads = p.threads.len().max(1);
    format!(
        "{pid} ({}) {} {} {} {} 0 -1 4194304 0 0 0 0 {} 0 {} 0 20 0 {threads} 0 {} {vsize} {rss} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        comm(p),
        state_letter(p),
        p.ppid,
        p.pgid,
        p.sid,
        ticks(cpu_of(p)),
        ticks(p.cpu_children),
        ticks(p.started),
    )
}

/// /proc/PID/status: the common fields.
fn status(pid: u32, p: &Process) -> String {
    let (vsize, rss) = p.space.lock().as_ref().map_or((0, 0), |s| s.sizes(&mut crate::mm::kmem::KernelMem));
    let state = match state_letter(p) {
        'Z' => "Z (zombie)",
        'T' => "T (stopped)",
        _ => "S (sleeping)",
    };
    format!(
        "Name:\t{}\nState:\t{state}\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t{}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t{}\nVmSize:\t{} kB\nVmRSS:\t{} kB\nThreads:\t{}\n",
        comm(p),
        p.ppid,
        p.fs.lock().files.limit(),
        vsize / 1024,
        rss * 4,
        p.threads.len().max(1),
    )
}

fn meminfo() -> String {
    let total = crate::mm::kmem::usable_bytes() / 1024;
    let free = crate::mm::kmem::free_frames() * 4;
    format!(
        "MemTotal:       {total:8} kB\nMemFree:        {free:8} kB\nMemAvailable:   {free:8} kB\nBuffers:               0 kB\nCached:                0 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\nShmem:                 0 kB\n"
    )
}

fn cpuinfo() -> String {
    let mhz = crate::time::tsc_hz() / 1_000_000;
    let mut s = String::new();
    for cpu in 0..crate::smp::cpus_online() {
        s.push_str(&format!("processor\t: {cpu}\nvendor_id\t: questv\nmodel name\t: x86-64 (questv)\ncpu MHz\t\t: {mhz}.000\nflags\t\t: fpu tsc msr pae cx8 apic sep cmov fxsr sse sse2 syscall nx lm\n\n"));
    }
    s
}

/// The open file behind descriptor `fd` of process `pid` (opening /proc/PID/fd/N).
pub fn open_file_of(pid: u32, fd: i64) -> Option<crate::fs::files::File> {
    TABLE.lock().procs.get(&pid).and_then(|p| p.fs.lock().files.get(fd).ok().cloned())
}
