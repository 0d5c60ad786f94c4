/* pipebench: pipes between two processes, as a benchmark (cycles on the TSC; the same static binary runs on
   questv and on Linux).
     pipebench pingpong N   N round trips of one byte: parent writes, child echoes back (cycles per round trip)
     pipebench stream N     N chunks of 64 KiB from parent to child (cycles per chunk; the line also gives MB/s)
*/
#include <questv/questv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char chunk[65536];

/* Read exactly n bytes (a pipe may return less than asked). */
static int read_all(int fd, char *b, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, b, n);
        if (r <= 0) return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "pingpong";
    long n = argc > 2 ? atol(argv[2]) : 2000;
    int stream = strcmp(mode, "stream") == 0;
    if (!stream && strcmp(mode, "pingpong") != 0) {
        fprintf(stderr, "usage: pipebench pingpong|stream N\n");
        return 2;
    }
    int to_child[2], to_parent[2];
    if (pipe(to_child) != 0 || pipe(to_parent) != 0) {
        perror("pipebench: pipe");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("pipebench: fork");
        return 1;
    }
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        if (stream) {
            for (long i = 0; i < n; i++)
                if (read_all(to_child[0], chunk, sizeof chunk) != 0) _exit(3);
            char done = 'd';
            _exit(write(to_parent[1], &done, 1) == 1 ? 0 : 4);
        }
        char c;
        for (long i = 0; i < n; i++) {
            if (read(to_child[0], &c, 1) != 1 || write(to_parent[1], &c, 1) != 1) _exit(3);
        }
        _exit(0);
    }
    close(to_child[0]);
    close(to_parent[1]);
    memset(chunk, 'q', sizeof chunk);
    unsigned long long start = questv_cycles();
    if (stream) {
        for (long i = 0; i < n; i++)
            if (write(to_child[1], chunk, sizeof chunk) != (ssize_t)sizeof chunk) return 1;
        char done;
        if (read(to_parent[0], &done, 1) != 1) return 1;
    } else {
        char c = 'x';
        for (long i = 0; i < n; i++) {
            if (write(to_child[1], &c, 1) != 1 || read(to_parent[0], &c, 1) != 1) return 1;
        }
    }
    unsigned long long cycles = questv_cycles() - start;
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("pipebench: the child failed (status %d)\n", status);
        return 1;
    }
    printf("RESULT pipebench mode=%s iterations=%ld cycles=%llu cycles_per_iter=%llu lang=c cpu=%d sandbox=%d\n", mode, n, cycles,
           n > 0 ? cycles / n : 0, questv_getcpu(), questv_sandbox());
    return 0;
}
