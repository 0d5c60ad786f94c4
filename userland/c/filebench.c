/* filebench: a file in /tmp written and read back in 64 KiB pieces, N times over (cycles per piece, on the
   TSC; the same static binary runs on questv and on Linux, where /tmp is a tmpfs too).
     filebench write N   N pieces written (the file is truncated each 64 pieces: 4 MiB at most)
     filebench read N    N pieces read (from a 4 MiB file, wrapping around)
*/
#include <questv/questv.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char piece[65536];

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "write";
    long n = argc > 2 ? atol(argv[2]) : 1000;
    int reading = strcmp(mode, "read") == 0;
    if (!reading && strcmp(mode, "write") != 0) {
        fprintf(stderr, "usage: filebench write|read N\n");
        return 2;
    }
    char path[64];
    snprintf(path, sizeof path, "/tmp/filebench-%d", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror("filebench: open");
        return 1;
    }
    memset(piece, 'f', sizeof piece);
    if (reading) {
        for (int i = 0; i < 64; i++)
            if (write(fd, piece, sizeof piece) != (ssize_t)sizeof piece) return 1;
    }
    unsigned long long start = questv_cycles();
    for (long i = 0; i < n; i++) {
        off_t at = (off_t)(i % 64) * (off_t)sizeof piece;
        ssize_t r = reading ? pread(fd, piece, sizeof piece, at) : pwrite(fd, piece, sizeof piece, at);
        if (r != (ssize_t)sizeof piece) {
            perror("filebench: i/o");
            return 1;
        }
        if (!reading && i % 64 == 63 && ftruncate(fd, 0) != 0) return 1;
    }
    unsigned long long cycles = questv_cycles() - start;
    close(fd);
    unlink(path);
    printf("RESULT filebench mode=%s iterations=%ld cycles=%llu cycles_per_iter=%llu lang=c cpu=%d sandbox=%d\n", mode, n, cycles,
           n > 0 ? cycles / n : 0, questv_getcpu(), questv_sandbox());
    return 0;
}
