/* The test harness shared by the conformance suites signals.c, threads.c and process.c (tests/conformance.rs).
 *
 * Each suite is one static binary, built unmodified with `musl-gcc -static -O2` and `gcc -static -O2` (glibc),
 * that runs the same way on Linux and on questv. Every check runs in its own forked child (its own process group),
 * so a crash, a hang or a stray signal in one check never stops the suite; the parent prints one line per check
 *
 *     RESULT <SUITE_CHECK> name=<name> ok=1
 *     RESULT <SUITE_CHECK> name=<name> ok=0 why=<detail-without-spaces>
 *
 * and at the end `RESULT conformance suite=<SUITE_NAME> libc=<musl|glibc> passed=P failed=F`, exiting with F
 * (capped at 255). `<suite> NAME...` runs only the checks whose names contain one of the NAMEs.
 *
 * What this provides: LIBC_NAME and NO_SUCH_PID; the page shared with the check process (`shared`: why it failed,
 * where it was) and step(); fail() and EXPECT(); time (clock_ns, now_ns, ms_since, sleep_ms, nap); children
 * (spawn, track, end_children, wait_for, describe, expect_end, idle_child); EXPECT_ERRNO() and EXPECT_END(); small helpers more than one suite uses
 * (on, on_info, my_tid, load, store, wait_value, null_write); struct check, and suite_main(), which runs a table
 * of checks and prints the lines above.
 *
 * A suite defines, before including this header (first, ahead of any system header: it sets _GNU_SOURCE):
 *
 *     SUITE_NAME      "signals", "threads", "process": the summary line's suite=
 *     SUITE_CHECK     "sigcheck", "thrcheck", "proccheck": the first word of each check's line
 *     CHECK_ALARM_S   a check process that has not finished after this many seconds ends itself (its own
 *                     alarm(): on_check_timeout); 0: no alarm (the signals suite, whose checks use SIGALRM,
 *                     alarm and ITIMER_REAL themselves)
 *     PARENT_WAIT_MS  how long the parent waits for a check process before killing it (the last resort; with an
 *                     alarm, a little longer than CHECK_ALARM_S)
 *
 * and ends with `int main(int argc, char **argv) { return suite_main(argc, argv, checks, N); }`.
 *
 * Helpers a suite may not use are marked MAYBE_UNUSED, so that every suite builds without warnings under
 * -Wall -Wextra. */
#ifndef QUESTV_SUITE_H
#define QUESTV_SUITE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if !defined(SUITE_NAME) || !defined(SUITE_CHECK) || !defined(CHECK_ALARM_S) || !defined(PARENT_WAIT_MS)
#error "define SUITE_NAME, SUITE_CHECK, CHECK_ALARM_S and PARENT_WAIT_MS before including suite.h"
#endif

#ifdef __GLIBC__
#define LIBC_NAME "glibc"
#else
#define LIBC_NAME "musl"
#endif

#define MAYBE_UNUSED __attribute__((unused))

/* A pid and a tid no process can have: above Linux's largest pid_max (4194304). */
#define NO_SUCH_PID 0x3fffffff

/* ------------------------------------------------------------------------------------------------------------- */
/* failing, and saying where */

/* A page shared between the parent and the check process (MAP_SHARED): why the check failed, and the last step
 * it reached, readable by the parent even when the check process crashed or hung. */
struct shared {
    char why[240];
    char step[64];
};
static struct shared *shared;
static char whybuf[240];

/* The reason a check fails, formatted into one static buffer: so only a check's main thread calls fail()/EXPECT
 * (threads record raw values for it to judge). */
static const char *fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(whybuf, sizeof whybuf, fmt, ap);
    va_end(ap);
    return whybuf;
}

#define EXPECT(cond, ...)                                                                                            \
    do {                                                                                                             \
        if (!(cond))                                                                                                 \
            return fail(__VA_ARGS__);                                                                                \
    } while (0)

/* `expr` (a call returning -1 (or MAP_FAILED) and setting errno) must fail with `err`. */
#define EXPECT_ERRNO(label, expr, err)                                                                               \
    do {                                                                                                             \
        errno = 0;                                                                                                   \
        long rc_ = (long)(expr);                                                                                     \
        int e_ = errno;                                                                                              \
        if (rc_ != -1 || e_ != (err))                                                                                \
            return fail("%s=%ld_errno=%d_want_-1_errno_%d", label, rc_, e_, err);                                    \
    } while (0)

/* Child `pid` must end by signal `sig` (0: exit with `code`): expect_end()'s verdict, returned as the check's. */
#define EXPECT_END(pid, sig, code)                                                                                   \
    do {                                                                                                             \
        const char *why_ = expect_end(pid, sig, code);                                                               \
        if (why_)                                                                                                    \
            return why_;                                                                                             \
    } while (0)

/* Where a check is, so a child that dies or hangs says how far it got. Copied by hand rather than with snprintf,
 * so it is async-signal-safe (a signal handler, or the child of a fork in a multithreaded check, may call it). */
static MAYBE_UNUSED void step(const char *s) {
    size_t i = 0;
    for (; s[i] && i < sizeof shared->step - 1; i++)
        shared->step[i] = s[i];
    shared->step[i] = 0;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* time */

static long long clock_ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long now_ns(void) {
    return clock_ns(CLOCK_MONOTONIC);
}

static MAYBE_UNUSED long long ms_since(long long t0) {
    return (now_ns() - t0) / 1000000;
}

/* Sleep the whole time even across signals. */
static MAYBE_UNUSED void sleep_ms(int ms) {
    struct timespec r = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&r, &r) == -1 && errno == EINTR) {
    }
}

/* The pause between two polls. */
static void nap(void) {
    struct timespec ts = {0, 500000};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------------------------------------------- */
/* children */

/* waitpid with WNOHANG polled for at most `ms`: the pid, -1 (errno set) or 0 on timeout. */
static pid_t wait_for(pid_t pid, int *status, int options, int ms) {
    long long end = now_ns() + ms * 1000000LL;
    for (;;) {
        pid_t r = waitpid(pid, status, options | WNOHANG);
        if (r == -1 && errno == EINTR)
            continue;
        if (r != 0)
            return r;
        if (now_ns() > end)
            return 0;
        nap();
    }
}

static const char *describe(int st) {
    static char buf[48];
    if (WIFEXITED(st))
        snprintf(buf, sizeof buf, "exited_%d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, sizeof buf, "killed_by_%d", WTERMSIG(st));
    else if (WIFSTOPPED(st))
        snprintf(buf, sizeof buf, "stopped_by_%d", WSTOPSIG(st));
    else
        snprintf(buf, sizeof buf, "status_%#x", st);
    return buf;
}

/* Wait (bounded) for `pid` to end by signal `sig`, or to exit with `code` when sig == 0. NULL if it did. */
static MAYBE_UNUSED const char *expect_end(pid_t pid, int sig, int code) {
    int st = 0;
    pid_t r = wait_for(pid, &st, 0, 4000);
    if (r == 0) {
        kill(pid, SIGKILL);
        wait_for(pid, &st, 0, 1000);
        return fail("child_timeout_at_%s", shared->step);
    }
    if (r != pid)
        return fail("waitpid=%d_errno=%d", (int)r, errno);
    if (sig ? !(WIFSIGNALED(st) && WTERMSIG(st) == sig) : !(WIFEXITED(st) && WEXITSTATUS(st) == code))
        return fail("child_%s_want_%s_%d", describe(st), sig ? "signal" : "exit", sig ? sig : code);
    return NULL;
}

/* Every child a check forks, so the check process can end those it leaves behind (a check that fails early or
 * hangs): an orphan would be reparented to init, and questv's init ends the run when any child of its exits.
 * volatile: on_check_timeout reads them, and a check's thread may fork. */
static volatile pid_t spawned[32];
static volatile int nspawned;

/* Note a child forked some other way (vfork). */
static MAYBE_UNUSED void track(pid_t p) {
    if (p > 0 && nspawned < 32)
        spawned[nspawned++] = p;
}

static MAYBE_UNUSED pid_t spawn(void) {
    pid_t p = fork();
    if (p > 0)
        track(p);
    if (p == 0)
        nspawned = 0;
    return p;
}

/* Kill and reap the children still there; a pid already reaped is left alone (it may be reused). */
static void end_children(void) {
    for (int i = 0; i < nspawned; i++) {
        int st;
        if (waitpid(spawned[i], &st, WNOHANG) == 0) {
            kill(spawned[i], SIGKILL);
            wait_for(spawned[i], &st, 0, 2000);
        }
    }
}

/* A child that waits to be signalled or stopped: at most 5 s, so nothing outlives a broken run for long. */
static MAYBE_UNUSED void idle_child(void) {
    for (int i = 0; i < 500; i++)
        sleep_ms(10);
    _exit(99);
}

/* ------------------------------------------------------------------------------------------------------------- */
/* small helpers */

static MAYBE_UNUSED int on(int sig, void (*h)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

static MAYBE_UNUSED int on_info(int sig, void (*h)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

static MAYBE_UNUSED pid_t my_tid(void) {
    return (pid_t)syscall(SYS_gettid);
}

static MAYBE_UNUSED int load(volatile int *p) {
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static MAYBE_UNUSED void store(volatile int *p, int v) {
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* Poll (1 ms sleeps) until *p == want; 0 if `ms` passed first. */
static MAYBE_UNUSED int wait_value(volatile int *p, int want, int ms) {
    long long end = now_ns() + ms * 1000000LL;
    while (load(p) != want) {
        if (now_ns() > end)
            return 0;
        sleep_ms(1);
    }
    return 1;
}

static MAYBE_UNUSED void null_write(void) {
    volatile int *volatile p = 0;
    *p = 1;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* running the checks */

struct check {
    const char *name;
    const char *(*fn)(void);
};

/* Signals the suite's parent ignores, so a misdirected signal (a broken kill(0) or kill(-pgrp)) cannot end the
 * suite; every check starts with all dispositions back at SIG_DFL and an empty mask. */
static const int parent_ignores[] = {SIGUSR1, SIGUSR2, SIGTERM, SIGALRM, SIGHUP, SIGINT, SIGQUIT, SIGURG, SIGWINCH};

#if CHECK_ALARM_S > 0
/* A check process that hangs: end the children it forked (so none is orphaned), say where it was, and exit.
 * Only async-signal-safe calls. */
static void on_check_timeout(int sig) {
    (void)sig;
    for (int i = 0; i < nspawned; i++) {
        int st;
        kill(spawned[i], SIGKILL);
        waitpid(spawned[i], &st, 0);
    }
    static const char pre[] = "timeout_at_";
    size_t n = 0;
    for (; pre[n]; n++)
        shared->why[n] = pre[n];
    for (size_t i = 0; shared->step[i] && n < sizeof shared->why - 1; i++)
        shared->why[n++] = shared->step[i];
    shared->why[n] = 0;
    _exit(1);
}
#endif

static void child_start(void) {
    setpgid(0, 0);
    for (int s = 1; s < 65; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL); /* glibc/musl refuse their internal signals: harmless */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
#if CHECK_ALARM_S > 0
    on(SIGALRM, on_check_timeout, 0);
    alarm(CHECK_ALARM_S); /* not inherited by the children a check forks */
#endif
}

static void emit(const char *name, int ok, const char *why) {
    char line[400];
    int n;
    if (ok) {
        n = snprintf(line, sizeof line, "RESULT " SUITE_CHECK " name=%s ok=1\n", name);
    } else {
        char clean[260];
        size_t i = 0;
        for (; why[i] && i < sizeof clean - 1; i++)
            clean[i] = (why[i] == ' ' || why[i] == '\t' || why[i] == '\n' || why[i] == '\r') ? '_' : why[i];
        clean[i] = 0;
        n = snprintf(line, sizeof line, "RESULT " SUITE_CHECK " name=%s ok=0 why=%s\n", name, i ? clean : "unknown");
    }
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1;
    ssize_t w = write(1, line, (size_t)n);
    (void)w;
    fflush(stdout);
}

/* Run one check in its own process (group); 1 if it passed. */
static int run(const struct check *c) {
    memset(shared, 0, sizeof *shared);
    snprintf(shared->step, sizeof shared->step, "start");
    pid_t pid = fork();
    if (pid < 0) {
        emit(c->name, 0, fail("fork_errno=%d", errno));
        return 0;
    }
    if (pid == 0) {
        child_start();
        const char *why = c->fn();
#if CHECK_ALARM_S > 0
        alarm(0);
#endif
        end_children();
        if (why) {
            snprintf(shared->why, sizeof shared->why, "%s", why);
            _exit(1);
        }
        snprintf(shared->why, sizeof shared->why, "ok");
        _exit(0);
    }
    setpgid(pid, pid);
    int st = 0;
    pid_t r = wait_for(pid, &st, 0, PARENT_WAIT_MS);
    /* The parent never signals the check's process group: the check ends its own leftovers (end_children, or
     * on_check_timeout), and what a crashed or hung check leaves behind ends by itself (idle_child: 5 s at most).
     * Killing orphans from here would hand their exit to init, and questv's init ends the run at the first child
     * of its that exits. */
    if (r == 0) {
        kill(pid, SIGKILL);
        wait_for(pid, &st, 0, 2000);
        emit(c->name, 0, fail("timeout_at_%s", shared->step));
        return 0;
    }
    if (r != pid) {
        emit(c->name, 0, fail("waitpid=%d_errno=%d", (int)r, errno));
        return 0;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && strcmp(shared->why, "ok") == 0) {
        emit(c->name, 1, NULL);
        return 1;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 1 && shared->why[0]) {
        emit(c->name, 0, shared->why);
        return 0;
    }
    emit(c->name, 0, fail("check_process_%s_at_%s", describe(st), shared->step));
    return 0;
}

/* Run the checks (those whose names contain one of argv[1..], if any) and print the summary line; the exit
 * status is the number that failed, capped at 255. */
static int suite_main(int argc, char **argv, const struct check *checks, size_t nchecks) {
    setvbuf(stdout, NULL, _IONBF, 0);
    shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        printf("RESULT conformance suite=" SUITE_NAME " libc=%s passed=0 failed=1 why=no_shared_page\n", LIBC_NAME);
        return 1;
    }
    for (size_t i = 0; i < sizeof parent_ignores / sizeof parent_ignores[0]; i++)
        signal(parent_ignores[i], SIG_IGN);
    int passed = 0, failed = 0;
    for (size_t i = 0; i < nchecks; i++) {
        if (argc > 1) {
            int want = 0;
            for (int a = 1; a < argc; a++)
                want |= strstr(checks[i].name, argv[a]) != NULL;
            if (!want)
                continue;
        }
        if (run(&checks[i]))
            passed++;
        else
            failed++;
    }
    char line[160];
    int n = snprintf(line, sizeof line, "RESULT conformance suite=" SUITE_NAME " libc=%s passed=%d failed=%d\n",
                     LIBC_NAME, passed, failed);
    ssize_t w = write(1, line, (size_t)n);
    (void)w;
    return failed > 255 ? 255 : failed;
}

#endif
