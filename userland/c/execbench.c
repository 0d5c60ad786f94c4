/* execbench: fork, execve of a small static program (this one, told to exit at once), wait — N times (cycles
   per fork+exec+wait on the TSC; the same static binary runs on questv and on Linux). */
#include <questv/questv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--exit") == 0) return 0;
    long n = argc > 1 ? atol(argv[1]) : 500;
    /* Linux and questv both give the executed path here: /proc/self/exe. */
    char self[256];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        perror("execbench: readlink /proc/self/exe");
        return 1;
    }
    self[len] = 0;
    char *child_argv[] = {self, "--exit", 0};
    unsigned long long start = questv_cycles();
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            execv(self, child_argv);
            _exit(127);
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("execbench: the child failed\n");
            return 1;
        }
    }
    unsigned long long cycles = questv_cycles() - start;
    printf("RESULT execbench iterations=%ld cycles=%llu cycles_per_iter=%llu lang=c cpu=%d sandbox=%d\n", n, cycles,
           n > 0 ? cycles / n : 0, questv_getcpu(), questv_sandbox());
    return 0;
}
