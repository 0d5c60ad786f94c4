/* questv's machine information for C programs (built against musl with `questv cc`). Each call also works on
   Linux, where it reports what a machine without questv's monitor has (no sandbox, no VM exits), so the same
   static binary measures questv and Linux (Fig 7's forkwait). */
#ifndef QUESTV_QUESTV_H
#define QUESTV_QUESTV_H
#include <questv/syscall.h>

/* The time-stamp counter: the clock every questv benchmark counts in (the same TSC on Linux). */
static inline unsigned long long questv_cycles(void) {
    unsigned lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((unsigned long long)hi << 32) | lo;
}
/* Free physical frames (leak checks); -1 outside questv. */
static inline long questv_free_frames(void) {
    long r = questv_syscall(SYS_questv_free_frames, 0, 0, 0, 0, 0, 0);
    return r < 0 ? -1 : r;
}
/* The CPU this thread runs on (Linux's getcpu, 309); -1 on failure. */
static inline int questv_getcpu(void) {
    unsigned cpu = 0;
    return questv_syscall(309, (long)&cpu, 0, 0, 0, 0, 0) < 0 ? -1 : (int)cpu;
}
/* Move the caller to `cpu` (0-63; Linux's sched_setaffinity, 203): 0, or a negative errno. */
static inline long questv_set_cpu(int cpu) {
    unsigned long mask = 1UL << cpu;
    return questv_syscall(203, 0, sizeof mask, (long)&mask, 0, 0, 0);
}
/* This sandbox's number in the VT build; -1 on the SMP build and on Linux. */
static inline int questv_sandbox(void) {
    long r = questv_syscall(SYS_questv_sandbox, 0, 0, 0, 0, 0, 0);
    return r < 0 ? -1 : (int)r;
}
/* VM exits of this sandbox so far (this query's own included); -1 without a monitor (SMP build, Linux). */
static inline long questv_vmexits(void) {
    long r = questv_syscall(SYS_questv_vmexits, 0, 0, 0, 0, 0, 0);
    return r < 0 ? -1 : r;
}
#endif
