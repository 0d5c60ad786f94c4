/* questv's own system calls, for C programs built against musl (`questv cc`, userland/c): their numbers
   (from 1000; Linux's numbers come from musl's <sys/syscall.h>) and a raw call that returns the kernel's
   value (a negative errno on failure) without touching errno. Must match questv_libc_shim::nr and the
   kernel's syscall.rs (checked by a host test, tests/abi.rs). */
#ifndef QUESTV_SYSCALL_H
#define QUESTV_SYSCALL_H
#define SYS_questv_cycles 1000
#define SYS_questv_free_frames 1001
#define SYS_questv_ncpus 1002
#define SYS_questv_sandbox 1003
#define SYS_questv_vmexits 1004
#define SYS_chan_open 1010
#define SYS_chan_send 1011
#define SYS_chan_recv 1012
#define SYS_chan_close 1013
#define SYS_chan_endpoint 1014
#define SYS_vcpu_create 1020
#define SYS_vcpu_bind 1021
#define SYS_vcpu_info 1022
#define SYS_vcpu_set 1023
#define SYS_vcpu_trace 1024
#define SYS_net_info 1030
#define SYS_net_wait 1031
#define SYS_state_save 1040
#define SYS_state_load 1041
#define SYS_incarnation 1042

/* On Linux every one of these is -ENOSYS (-38): the helpers in <questv/questv.h> turn that into "no
   sandbox" / "no monitor", so one binary runs on questv and on Linux. */
static inline long questv_syscall(long n, long a0, long a1, long a2, long a3, long a4, long a5) {
    register long r10 __asm__("r10") = a3;
    register long r8 __asm__("r8") = a4;
    register long r9 __asm__("r9") = a5;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#endif
