/* timeit PROG ARGS: run one instance of a program and report it — `compare` runs it once per core (SMP), once
   per sandbox (VT) and once per vCPU (Linux), the same static binary everywhere. Its wall time is the guest's
   CLOCK_MONOTONIC from fork to reap. The program's standard output comes through a pipe and is passed on line
   by line; its own RESULT lines get ` instance=N` appended (N: the core or sandbox this instance runs on), so
   that lines printed by instances running at once can be told apart. In a sandbox on several cores, where the
   sandbox number does not tell its instances apart, `compare` gives the machine's core numbers of the
   sandbox's CPUs in TIMEIT_CORES (`2,3`: its CPU 0 is core 2): N is then the core. Last line:
     RESULT instance instance=N status=S wall_us=U result_lines=K
   S is the shell's status (128 + signal for a killed program, 127 if it could not be started). */
#include <questv/questv.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000ULL + (unsigned long long)t.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: timeit PROG ARGS\n");
        return 2;
    }
    int sandbox = questv_sandbox();
    int instance = sandbox >= 0 ? sandbox : questv_getcpu();
    const char *cores = getenv("TIMEIT_CORES");
    if (cores) {
        /* The entry for this CPU: the CPU-th number of the list. */
        int cpu = questv_getcpu();
        for (int i = 0; cores && i < cpu; i++) {
            cores = strchr(cores, ',');
            if (cores) cores++;
        }
        if (cores && *cores >= '0' && *cores <= '9') instance = atoi(cores);
    }
    int out[2];
    if (pipe(out) != 0) {
        perror("timeit: pipe");
        return 1;
    }
    unsigned long long start = now_us();
    pid_t pid = fork();
    if (pid < 0) {
        perror("timeit: fork");
        return 1;
    }
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execvp(argv[1], argv + 1);
        fprintf(stderr, "timeit: cannot run %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    close(out[1]);
    FILE *in = fdopen(out[0], "r");
    char line[4096];
    int results = 0;
    while (in && fgets(line, sizeof line, in)) {
        size_t n = strlen(line);
        int whole = n > 0 && line[n - 1] == '\n';
        if (whole) line[--n] = 0;
        if (strncmp(line, "RESULT ", 7) == 0) {
            printf("%s instance=%d%s", line, instance, whole ? "\n" : "");
            results++;
        } else {
            printf("%s%s", line, whole ? "\n" : "");
        }
        fflush(stdout);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    unsigned long long wall = now_us() - start;
    int s = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("RESULT instance instance=%d status=%d wall_us=%llu result_lines=%d\n", instance, s, wall, results);
    return 0;
}
