/* questv libc shim: system call wrappers and process start-up for C programs. */
#include <errno.h>
#include <questv/syscall.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int errno;

long questv_syscall(long n, long a0, long a1, long a2, long a3, long a4, long a5) {
    register long r10 __asm__("r10") = a3;
    register long r8 __asm__("r8") = a4;
    register long r9 __asm__("r9") = a5;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* Map a raw result to the C convention: -1 and errno on failure. */
static long check(long r) {
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

#define SC0(n) questv_syscall(n, 0, 0, 0, 0, 0, 0)
#define SC1(n, a) questv_syscall(n, (long)(a), 0, 0, 0, 0, 0)
#define SC3(n, a, b, c) questv_syscall(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)

pid_t fork(void) { return (pid_t)check(SC0(SYS_fork)); }
pid_t getpid(void) { return (pid_t)SC0(SYS_getpid); }
pid_t getppid(void) { return (pid_t)SC0(SYS_getppid); }
void _exit(int status) {
    SC1(SYS_exit, status);
    for (;;) {
    }
}
ssize_t write(int fd, const void *buf, size_t n) { return check(SC3(SYS_write, fd, buf, n)); }
ssize_t read(int fd, void *buf, size_t n) { return check(SC3(SYS_read, fd, buf, n)); }
int execve(const char *path, char *const argv[], char *const envp[]) { return (int)check(SC3(SYS_execve, path, argv, envp)); }
int execv(const char *path, char *const argv[]) { return execve(path, argv, 0); }
int sched_yield(void) { return (int)check(SC0(SYS_sched_yield)); }
pid_t waitpid(pid_t pid, int *status, int options) { return (pid_t)check(SC3(SYS_wait4, pid, status, options)); }
pid_t wait(int *status) { return waitpid(-1, status, 0); }
int clock_gettime(int clock, struct timespec *ts) { return (int)check(SC3(SYS_clock_gettime, clock, ts, 0)); }
int nanosleep(const struct timespec *req, struct timespec *rem) { return (int)check(SC3(SYS_nanosleep, req, rem, 0)); }
unsigned sleep(unsigned seconds) {
    struct timespec ts = {seconds, 0};
    nanosleep(&ts, 0);
    return 0;
}

static char *current_brk;

int brk(void *addr) {
    char *r = (char *)SC1(SYS_brk, addr);
    current_brk = r;
    if (r != addr) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

void *sbrk(long increment) {
    if (!current_brk) current_brk = (char *)SC1(SYS_brk, 0);
    char *old = current_brk;
    if (increment == 0) return old;
    if (brk(old + increment) < 0) return (void *)-1;
    return old;
}

unsigned long long questv_cycles(void) { return (unsigned long long)SC0(SYS_questv_cycles); }
long questv_free_frames(void) { return SC0(SYS_questv_free_frames); }
int questv_ncpus(void) { return (int)SC0(SYS_questv_ncpus); }
int questv_getcpu(void) {
    unsigned cpu = 0;
    if (check(SC3(SYS_getcpu, &cpu, 0, 0)) < 0) return -1;
    return (int)cpu;
}
int questv_sandbox(void) { return (int)SC0(SYS_questv_sandbox); }
long questv_vmexits(void) {
    long r = SC0(SYS_questv_vmexits);
    return r < 0 ? -1 : r;
}
int questv_set_cpu(int cpu) {
    unsigned long mask = 1UL << cpu;
    return (int)check(SC3(SYS_sched_setaffinity, 0, sizeof mask, &mask));
}

void exit(int status) { _exit(status); }
void abort(void) { _exit(134); }

int main(int argc, char **argv);

/* Entry: the kernel leaves argc, argv[] on the stack (SysV layout). */
__attribute__((used)) static void questv_c_start(long *sp) {
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1);
    exit(main(argc, argv));
}

__asm__(".section .text.start, \"ax\"\n"
        ".global _start\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call questv_c_start\n"
        "    ud2\n"
        ".text\n");
