/* Stateful recovery (docs/recovery.md): a service hands its state to the monitor, which keeps it outside the
   sandbox; after the sandbox is recovered, the service's new incarnation loads it and carries on. In the SMP
   build the kernel keeps it (there is no recovery to survive). Same calls as questv_libc_shim::state. */
#ifndef QUESTV_STATE_H
#define QUESTV_STATE_H
#include <questv/syscall.h>

#define QUESTV_STATE_MAX 4096

/* Replace the kept state with len bytes at data (len <= QUESTV_STATE_MAX): 0, or -EINVAL / -EFAULT. */
static inline long questv_state_save(const void *data, long len) {
    return questv_syscall(SYS_state_save, (long)data, len, 0, 0, 0, 0);
}
/* Copy the kept state into buf (at most len bytes): its whole length, 0 if nothing is kept, or -EFAULT. */
static inline long questv_state_load(void *buf, long len) {
    return questv_syscall(SYS_state_load, (long)buf, len, 0, 0, 0, 0);
}
/* How many times this sandbox has been recovered (0: its first boot; always 0 in the SMP build). */
static inline long questv_incarnation(void) { return questv_syscall(SYS_incarnation, 0, 0, 0, 0, 0, 0); }
#endif
