/* hello: a C program on musl (printf formats, malloc/free, getpid/getppid, clock_gettime, argv). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    printf("hello from C: argc=%d argv0=%s pid=%d ppid=%d\n", argc, argv[0], getpid(), getppid());
    char buf[64];
    snprintf(buf, sizeof buf, "[%5d|%-4s|%04x|%lld|%c|%%]", -42, "ab", 0xbeef, -1234567890123LL, 'z');
    int fmt_ok = strcmp(buf, "[  -42|ab  |beef|-1234567890123|z|%]") == 0;
    char *blocks[32];
    int heap_ok = 1;
    for (int i = 0; i < 32; i++) {
        blocks[i] = malloc(100 + i * 50);
        if (!blocks[i]) heap_ok = 0;
        else memset(blocks[i], i, 100 + i * 50);
    }
    for (int i = 0; i < 32; i += 2) free(blocks[i]);
    for (int i = 1; i < 32; i += 2)
        if (blocks[i] && blocks[i][99] != i) heap_ok = 0;
    struct timespec t;
    int clock_ok = clock_gettime(CLOCK_MONOTONIC, &t) == 0 && t.tv_nsec >= 0 && t.tv_nsec < 1000000000;
    printf("RESULT hello fmt_ok=%d heap_ok=%d clock_ok=%d args=%d\n", fmt_ok, heap_ok, clock_ok, argc);
    return fmt_ok && heap_ok && clock_ok ? 0 : 1;
}
