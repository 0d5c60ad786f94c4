/* sigbench: signal delivery round trip. N times: kill(getpid(), SIGUSR1), the handler runs, rt_sigreturn comes
   back; cycles per round trip on the TSC. The same static binary runs on questv and on Linux. */
#include <questv/questv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile sig_atomic_t handled;

static void on_usr1(int sig) {
    (void)sig;
    handled++;
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 10000;
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, 0) != 0) {
        perror("sigbench: sigaction");
        return 1;
    }
    pid_t me = getpid();
    for (long i = 0; i < iterations / 10 + 1; i++) kill(me, SIGUSR1); /* warm up */
    handled = 0;
    long exits_before = questv_vmexits();
    unsigned long long start = questv_cycles();
    for (long i = 0; i < iterations; i++) kill(me, SIGUSR1);
    unsigned long long cycles = questv_cycles() - start;
    long exits_after = questv_vmexits();
    long vmexits = exits_before < 0 ? -1 : exits_after - exits_before - 1;
    if (handled != iterations) {
        printf("sigbench: %ld signals sent, %ld handled\n", iterations, (long)handled);
        return 1;
    }
    printf("RESULT sigbench iterations=%ld cycles=%llu cycles_per_iter=%llu lang=c cpu=%d sandbox=%d vmexits=%ld\n",
           iterations, cycles, iterations > 0 ? cycles / iterations : 0, questv_getcpu(), questv_sandbox(), vmexits);
    return 0;
}
