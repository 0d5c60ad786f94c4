/* Tiny static test program for the Linux baseline guest (src/linux.rs): forks once, waits, prints a line. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0)
        _exit(42); /* the parent checks it gets this status back */
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 42) {
        fprintf(stderr, "waitpid: unexpected status %d\n", status);
        return 1;
    }
    printf("hello from linux (child %d exited with 42)\n", (int)pid);
    return 0;
}
