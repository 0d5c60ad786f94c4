/* futexbench: a futex ping-pong between two threads of one process. The main thread sets the word to 1 and
   wakes the partner, which sets it back to 0 and wakes the main thread; each side sleeps in FUTEX_WAIT while
   the word is not its turn. Cycles per round trip on the TSC. The same static binary runs on questv and on
   Linux (where both threads run where the process is pinned). */
#include <questv/questv.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129

static _Atomic int word;
static long iterations;

static void wait_while(int v) {
    while (atomic_load(&word) == v) syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, v, 0, 0, 0);
}

static void set_and_wake(int v) {
    atomic_store(&word, v);
    syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
}

static void *partner(void *arg) {
    (void)arg;
    for (long i = 0; i < iterations; i++) {
        wait_while(0);
        set_and_wake(0);
    }
    return 0;
}

static void rounds(long n) {
    for (long i = 0; i < n; i++) {
        set_and_wake(1);
        wait_while(1);
    }
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    long warm = n / 10 + 1;
    iterations = warm + n;
    pthread_t t;
    if (pthread_create(&t, 0, partner, 0) != 0) {
        printf("futexbench: pthread_create failed\n");
        return 1;
    }
    rounds(warm);
    long exits_before = questv_vmexits();
    unsigned long long start = questv_cycles();
    rounds(n);
    unsigned long long cycles = questv_cycles() - start;
    long exits_after = questv_vmexits();
    long vmexits = exits_before < 0 ? -1 : exits_after - exits_before - 1;
    pthread_join(t, 0);
    printf("RESULT futexbench iterations=%ld cycles=%llu cycles_per_iter=%llu lang=c cpu=%d sandbox=%d vmexits=%ld\n",
           n, cycles, n > 0 ? cycles / n : 0, questv_getcpu(), questv_sandbox(), vmexits);
    return 0;
}
