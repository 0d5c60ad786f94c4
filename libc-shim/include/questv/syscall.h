/* questv system call numbers (Linux x86_64 numbering; questv's own from 1000).
   Must match questv_libc_shim::nr and the kernel's syscall.rs (checked by a host test). */
#ifndef QUESTV_SYSCALL_H
#define QUESTV_SYSCALL_H
#define SYS_read 0
#define SYS_write 1
#define SYS_mmap 9
#define SYS_munmap 11
#define SYS_brk 12
#define SYS_sched_yield 24
#define SYS_nanosleep 35
#define SYS_getpid 39
#define SYS_fork 57
#define SYS_execve 59
#define SYS_exit 60
#define SYS_wait4 61
#define SYS_getppid 110
#define SYS_sched_setaffinity 203
#define SYS_clock_gettime 228
#define SYS_exit_group 231
#define SYS_getcpu 309
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

long questv_syscall(long n, long a0, long a1, long a2, long a3, long a4, long a5);
#endif
