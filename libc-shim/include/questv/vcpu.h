/* VCPUs (docs/scheduling.md): Main VCPUs are sporadic servers (budget C per period T, rate-monotonic
   priority), I/O VCPUs have a fixed utilization and inherit priority. Times in microseconds; VCPUs belong to
   the calling CPU (sandbox). Same layout as questv_libc_shim::vcpu::Info. */
#ifndef QUESTV_VCPU_H
#define QUESTV_VCPU_H
#include <questv/syscall.h>

#define QUESTV_VCPU_MAIN 0
#define QUESTV_VCPU_IO 1
#define QUESTV_VCPU_DEFAULT 0

struct questv_vcpu_info {
    unsigned long class_, budget_us, period_us, foreground_us, background_us, capacity_us;
    unsigned long replenishments, exhausted, overrun_us, switches_in;
};

/* Each returns a negative errno on failure: -EINVAL (bad parameters), -EBUSY (the core's VCPU set would
   exceed the rate-monotonic bound), -ESRCH (no such VCPU). */
static inline long questv_vcpu_create(long cls, long budget_us, long period_us) {
    return questv_syscall(SYS_vcpu_create, cls, budget_us, period_us, 0, 0, 0);
}
static inline long questv_vcpu_bind(long id) { return questv_syscall(SYS_vcpu_bind, id, 0, 0, 0, 0, 0); }
static inline long questv_vcpu_info(long id, struct questv_vcpu_info *info) {
    return questv_syscall(SYS_vcpu_info, id, (long)info, 0, 0, 0, 0);
}
static inline long questv_vcpu_set(long id, long budget_us, long period_us) {
    return questv_syscall(SYS_vcpu_set, id, budget_us, period_us, 0, 0, 0);
}
static inline long questv_vcpu_trace(char *buf, long len) {
    return questv_syscall(SYS_vcpu_trace, (long)buf, len, 0, 0, 0, 0);
}
#endif
