//! The calling process's memory, reached through its live mapping (the loaded page tables' lower half): a
//! copy that meets a page not there yet has it filled or copied by the page-fault path, as the program's own
//! access would, and fails with EFAULT where the program would get SIGSEGV. The caller may hold no lock that
//! path takes (the process's address space, the process table); code that copies under those locks uses
//! `UserSpace`'s copies, which walk the tables instead.
#![forbid(unsafe_code)]

use questv_libc_shim::errno::EFAULT;

/// Fill `buf` from user memory at `addr`: Err(-EFAULT) if any of it cannot be read.
pub fn read(addr: u64, buf: &mut [u8]) -> Result<(), i64> {
    questv_arch::uaccess::copy_from_user(buf, addr).map_err(|()| -EFAULT)
}

/// `N` bytes of user memory at `addr`.
pub fn read_array<const N: usize>(addr: u64) -> Result<[u8; N], i64> {
    let mut b = [0u8; N];
    read(addr, &mut b)?;
    Ok(b)
}

/// Write `data` to user memory at `addr`: Err(-EFAULT) if any of it cannot be written.
pub fn write(addr: u64, data: &[u8]) -> Result<(), i64> {
    questv_arch::uaccess::copy_to_user(addr, data).map_err(|()| -EFAULT)
}

/// A NUL-terminated string of user memory at `addr`, without its NUL: EFAULT if unreadable, `too_long` (an
/// errno) if no NUL comes within `max` bytes. Read a page at a time (a string may end just before an
/// unmapped page).
pub fn read_cstr(addr: u64, max: usize, too_long: i64) -> Result<alloc::vec::Vec<u8>, i64> {
    let mut out = alloc::vec::Vec::new();
    let mut at = addr;
    while out.len() < max {
        let page_left = (4096 - (at % 4096)) as usize;
        let mut chunk = [0u8; 4096];
        let n = page_left.min(max - out.len());
        read(at, &mut chunk[..n])?;
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
        at = at.checked_add(n as u64).ok_or(-EFAULT)?;
    }
    Err(too_long)
}
