/* forkwait: the Quest-V paper's Listing 1 (§4.2), unmodified in substance: fork a child that exits at once and
   wait for it, N times (default 40000). Prints the total and per-iteration cycle count. Built with musl; the
   same static binary runs on questv and on Linux (Fig 7). */
#include <questv/questv.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 40000;
    pid_t pid;
    int i, status;
    long exits_before = questv_vmexits();
    unsigned long long start = questv_cycles();
    for (i = 0; i < iterations; i++) {
        pid = fork();
        if (pid == 0) exit(0);
        else if (pid < 0) exit(1);
        else waitpid(pid, &status, 0);
    }
    unsigned long long cycles = questv_cycles() - start;
    long exits_after = questv_vmexits();
    /* VT: exits during the loop = the difference minus the second query's own exit; -1 on the SMP build. */
    long vmexits = exits_before < 0 ? -1 : exits_after - exits_before - 1;
    printf("RESULT forkwait iterations=%ld cycles=%llu cycles_per_iter=%llu lang=c cpu=%d sandbox=%d vmexits=%ld\n",
           iterations, cycles, iterations > 0 ? cycles / iterations : 0, questv_getcpu(), questv_sandbox(), vmexits);
    return 0;
}
