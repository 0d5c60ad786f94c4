#ifndef QUESTV_UNISTD_H
#define QUESTV_UNISTD_H
#include <stddef.h>
typedef int pid_t;
pid_t fork(void);
pid_t getpid(void);
pid_t getppid(void);
void _exit(int status) __attribute__((noreturn));
ssize_t write(int fd, const void *buf, size_t n);
ssize_t read(int fd, void *buf, size_t n);
int execve(const char *path, char *const argv[], char *const envp[]);
int execv(const char *path, char *const argv[]);
int sched_yield(void);
int brk(void *addr);
void *sbrk(long increment);
unsigned sleep(unsigned seconds);
/* questv extensions */
unsigned long long questv_cycles(void);
long questv_free_frames(void);
int questv_ncpus(void);
int questv_getcpu(void);
int questv_set_cpu(int cpu);
/* VT build: the sandbox this program runs in (-1 on the SMP build), and its VM exits so far (this call's
   own exit included; -1 without a monitor). */
int questv_sandbox(void);
long questv_vmexits(void);
#endif
