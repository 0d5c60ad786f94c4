/* Linux stand-ins for the questv calls in userland/c/forkwait.c, so the paper's Fig 7 runs the same loop on
   Linux 6.1 (`gcc -O2 -static -include questv_compat.h forkwait.c`). Time is the TSC, as on questv. */
#define _GNU_SOURCE
#include <sched.h>
#include <x86intrin.h>

static inline unsigned long long questv_cycles(void) { return __rdtsc(); }
/* No monitor: -1, as the SMP build reports. */
static inline long questv_vmexits(void) { return -1; }
static inline int questv_getcpu(void) { return sched_getcpu(); }
static inline int questv_sandbox(void) { return -1; }
