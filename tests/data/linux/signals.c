/* POSIX/Linux signals conformance suite for questv (tests/conformance.rs).
 *
 * One static binary, built unmodified with `musl-gcc -static -O2` and `gcc -static -O2` (glibc), that runs the same
 * way on Linux and on questv. Every check runs in its own forked child (its own process group), so a crash, a hang
 * or a stray signal in one check never stops the suite; the parent prints one line per check
 *
 *     RESULT sigcheck name=<name> ok=1
 *     RESULT sigcheck name=<name> ok=0 why=<detail-without-spaces>
 *
 * and at the end `RESULT conformance suite=signals libc=<musl|glibc> passed=P failed=F`, exiting with F (capped at
 * 255). `signals NAME...` runs only the checks whose names contain one of the NAMEs. The harness, shared with
 * threads.c and process.c, is suite.h; unlike theirs, a check process here has no alarm() of its own (the checks
 * use SIGALRM), so a hung check is ended by the parent's bounded wait.
 *
 * System calls used (the set questv implements for signals): rt_sigaction, rt_sigprocmask, rt_sigreturn,
 * rt_sigpending, rt_sigsuspend, rt_sigtimedwait, sigaltstack, kill, tgkill, tkill, pause, alarm, setitimer and
 * getitimer (ITIMER_REAL), nanosleep, clock_gettime, clock_nanosleep, getpid, getppid, gettid, fork/clone, wait4,
 * exit, exit_group, mmap, munmap, mprotect, brk, write, writev, getpgid/setpgid/getpgrp/setsid/getsid,
 * sched_yield, arch_prctl, set_tid_address, ioctl on stdout. No files, pipes or threads.
 *
 * The expectations are Linux's behaviour (checked on Linux 6.1 and later), including details POSIX leaves open;
 * each is commented where it is not obvious. */
#define SUITE_NAME "signals"
#define SUITE_CHECK "sigcheck"
/* No per-check alarm: the checks use SIGALRM, alarm() and ITIMER_REAL themselves. */
#define CHECK_ALARM_S 0
#define PARENT_WAIT_MS 10000
#include "suite.h"

#include <limits.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/time.h>
#include <ucontext.h>

/* ------------------------------------------------------------------------------------------------------------- */
/* helpers of this suite (the harness is suite.h) */

static int arm_ms(int value_ms, int interval_ms) {
    struct itimerval it;
    memset(&it, 0, sizeof it);
    it.it_value.tv_sec = value_ms / 1000;
    it.it_value.tv_usec = (value_ms % 1000) * 1000;
    it.it_interval.tv_sec = interval_ms / 1000;
    it.it_interval.tv_usec = (interval_ms % 1000) * 1000;
    return setitimer(ITIMER_REAL, &it, NULL);
}

static void disarm(void) {
    arm_ms(0, 0);
}

/* A grandchild signals the check process; never init, should the check have ended early (and been reparented). */
static void signal_parent(int sig) {
    pid_t pp = getppid();
    if (pp > 1)
        kill(pp, sig);
}

static void reap(pid_t pid) {
    int st;
    kill(pid, SIGKILL);
    wait_for(pid, &st, 0, 2000);
}

static int mask_op(int how, int sig) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    return sigprocmask(how, &s, NULL);
}

static int blocked(int sig) {
    sigset_t s;
    sigprocmask(SIG_BLOCK, NULL, &s);
    return sigismember(&s, sig);
}

static int pending(int sig) {
    sigset_t s;
    sigpending(&s);
    return sigismember(&s, sig);
}

/* The kernel's struct sigaction on x86-64 (for raw rt_sigaction calls). */
struct ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

/* ------------------------------------------------------------------------------------------------------------- */
/* shared handlers and state */

static volatile sig_atomic_t hits;
static volatile int got_signo;
static siginfo_t got_info;

static void h_count(int sig) {
    hits++;
    got_signo = sig;
}

static void h_info(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_info = *si;
    got_signo = sig;
    hits++;
}

static void h_exit50(int sig) {
    (void)sig;
    _exit(50);
}

/* ------------------------------------------------------------------------------------------------------------- */
/* installing, querying, siginfo */

static const char *c_sigaction_query(void) {
    struct sigaction sa, old;
    EXPECT(sigaction(SIGUSR1, NULL, &old) == 0, "query_errno=%d", errno);
    EXPECT(old.sa_handler == SIG_DFL, "initial_handler_not_SIG_DFL");
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h_count;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaddset(&sa.sa_mask, SIGKILL); /* silently dropped from sa_mask by the kernel */
    EXPECT(sigaction(SIGUSR1, &sa, &old) == 0, "install_errno=%d", errno);
    EXPECT(old.sa_handler == SIG_DFL, "old_of_first_install_not_SIG_DFL");
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h_info;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGTERM);
    EXPECT(sigaction(SIGUSR1, &sa, &old) == 0, "reinstall_errno=%d", errno);
    EXPECT(old.sa_handler == h_count, "oldact_handler_is_not_the_previous_one");
    EXPECT(old.sa_flags & SA_RESTART, "oldact_lost_SA_RESTART_flags=%#x", (unsigned)old.sa_flags);
    EXPECT(!(old.sa_flags & SA_SIGINFO), "oldact_has_SA_SIGINFO_flags=%#x", (unsigned)old.sa_flags);
    EXPECT(sigismember(&old.sa_mask, SIGUSR2) == 1, "oldact_mask_lost_SIGUSR2");
    EXPECT(sigismember(&old.sa_mask, SIGTERM) == 0, "oldact_mask_has_SIGTERM");
    EXPECT(sigismember(&old.sa_mask, SIGKILL) == 0, "sa_mask_kept_SIGKILL");
    EXPECT(sigaction(SIGUSR1, NULL, &old) == 0, "query2_errno=%d", errno);
    EXPECT(old.sa_sigaction == h_info, "query_handler_wrong");
    EXPECT((old.sa_flags & SA_SIGINFO) && !(old.sa_flags & SA_RESTART), "query_flags=%#x", (unsigned)old.sa_flags);
    EXPECT(sigismember(&old.sa_mask, SIGTERM) == 1 && sigismember(&old.sa_mask, SIGUSR2) == 0, "query_mask_wrong");
    /* SIG_IGN and SIG_DFL read back as themselves. */
    EXPECT(signal(SIGUSR2, SIG_IGN) == SIG_DFL, "signal_SIG_IGN_old_not_SIG_DFL");
    EXPECT(sigaction(SIGUSR2, NULL, &old) == 0 && old.sa_handler == SIG_IGN, "SIG_IGN_not_read_back");
    return NULL;
}

static const char *c_siginfo_kill(void) {
    on_info(SIGUSR1, h_info, 0);
    pid_t me = getpid();
    EXPECT(kill(me, SIGUSR1) == 0, "kill_errno=%d", errno);
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    EXPECT(got_info.si_signo == SIGUSR1, "si_signo=%d", got_info.si_signo);
    EXPECT(got_info.si_code == SI_USER, "si_code=%d_want_SI_USER_0", got_info.si_code);
    EXPECT(got_info.si_pid == me, "si_pid=%d_want_%d", (int)got_info.si_pid, (int)me);
    return NULL;
}

static const char *c_handler_before_kill_returns(void) {
    on(SIGUSR2, h_count, 0);
    EXPECT(kill(getpid(), SIGUSR2) == 0, "kill_errno=%d", errno);
    EXPECT(hits == 1 && got_signo == SIGUSR2, "hits_after_kill_returned=%d", (int)hits);
    return NULL;
}

static const char *c_siginfo_raise(void) {
    on_info(SIGUSR1, h_info, 0);
    EXPECT(raise(SIGUSR1) == 0, "raise_failed");
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    EXPECT(got_info.si_signo == SIGUSR1, "si_signo=%d", got_info.si_signo);
    EXPECT(got_info.si_code == SI_TKILL, "si_code=%d_want_SI_TKILL_-6", got_info.si_code);
    EXPECT(got_info.si_pid == getpid(), "si_pid=%d", (int)got_info.si_pid);
    return NULL;
}

static const char *c_siginfo_tgkill_tkill(void) {
    on_info(SIGUSR2, h_info, 0);
    EXPECT(syscall(SYS_tgkill, getpid(), my_tid(), SIGUSR2) == 0, "tgkill_errno=%d", errno);
    EXPECT(hits == 1, "tgkill_handler_ran_%d_times", (int)hits);
    EXPECT(got_info.si_code == SI_TKILL && got_info.si_pid == getpid(), "tgkill_si_code=%d_si_pid=%d", got_info.si_code,
           (int)got_info.si_pid);
    memset(&got_info, 0, sizeof got_info);
    EXPECT(syscall(SYS_tkill, my_tid(), SIGUSR2) == 0, "tkill_errno=%d", errno);
    EXPECT(hits == 2, "tkill_handler_ran_%d_times", (int)hits);
    EXPECT(got_info.si_code == SI_TKILL && got_info.si_pid == getpid() && got_info.si_signo == SIGUSR2,
           "tkill_si_code=%d_si_pid=%d", got_info.si_code, (int)got_info.si_pid);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* blocking and pending */

static const char *c_blocked_pending_once(void) {
    on(SIGUSR1, h_count, 0);
    EXPECT(mask_op(SIG_BLOCK, SIGUSR1) == 0, "block_errno=%d", errno);
    EXPECT(pending(SIGUSR1) == 0, "pending_before_kill");
    kill(getpid(), SIGUSR1);
    EXPECT(hits == 0, "blocked_signal_delivered");
    EXPECT(pending(SIGUSR1) == 1, "not_in_sigpending");
    EXPECT(mask_op(SIG_UNBLOCK, SIGUSR1) == 0, "unblock_errno=%d", errno);
    EXPECT(hits == 1, "after_unblock_hits=%d", (int)hits); /* delivered before sigprocmask returns */
    EXPECT(pending(SIGUSR1) == 0, "still_pending_after_delivery");
    sleep_ms(5);
    EXPECT(hits == 1, "delivered_again_hits=%d", (int)hits);
    return NULL;
}

static const char *c_standard_coalesce(void) {
    on(SIGUSR1, h_count, 0);
    mask_op(SIG_BLOCK, SIGUSR1);
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGUSR1);
    mask_op(SIG_UNBLOCK, SIGUSR1);
    EXPECT(hits == 1, "kill_x3_delivered_%d_times_want_1", (int)hits);
    hits = 0;
    mask_op(SIG_BLOCK, SIGUSR1);
    raise(SIGUSR1);
    syscall(SYS_tkill, my_tid(), SIGUSR1);
    syscall(SYS_tgkill, getpid(), my_tid(), SIGUSR1);
    mask_op(SIG_UNBLOCK, SIGUSR1);
    EXPECT(hits == 1, "raise+tkill+tgkill_delivered_%d_times_want_1", (int)hits);
    return NULL;
}

/* Linux keeps two pending sets: the process's (kill) and the thread's (tgkill, tkill, raise, faults). A standard
 * signal coalesces within each set only, so one kill and one tgkill while blocked are delivered twice. */
static const char *c_process_and_thread_pending(void) {
    on_info(SIGUSR1, h_info, 0);
    mask_op(SIG_BLOCK, SIGUSR1);
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGUSR1);
    syscall(SYS_tgkill, getpid(), my_tid(), SIGUSR1);
    syscall(SYS_tkill, my_tid(), SIGUSR1);
    EXPECT(pending(SIGUSR1), "not_pending");
    mask_op(SIG_UNBLOCK, SIGUSR1);
    EXPECT(hits == 2, "delivered_%d_times_want_2_(one_per_pending_set)", (int)hits);
    /* The thread's set is taken first: the last delivery is the process-directed one. */
    EXPECT(got_info.si_code == SI_USER, "last_delivery_si_code=%d_want_SI_USER", got_info.si_code);
    return NULL;
}

static volatile int order[16];
static volatile int norder;
static void h_order(int sig) {
    if (norder < 16)
        order[norder] = sig;
    norder++;
}

static int on_fullmask(int sig, void (*h)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sigfillset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

/* Realtime signals queue (even from kill) and come out lowest number first, FIFO within one number. */
static const char *c_rt_queue(void) {
    int a = SIGRTMIN + 2, b = SIGRTMIN + 3;
    on_fullmask(a, h_order);
    on_fullmask(b, h_order);
    sigset_t s, old;
    sigemptyset(&s);
    sigaddset(&s, a);
    sigaddset(&s, b);
    sigprocmask(SIG_BLOCK, &s, &old);
    kill(getpid(), b);
    kill(getpid(), a);
    kill(getpid(), a);
    kill(getpid(), b);
    EXPECT(norder == 0, "blocked_rt_delivered");
    EXPECT(pending(a) && pending(b), "rt_not_pending");
    sigprocmask(SIG_SETMASK, &old, NULL);
    EXPECT(norder == 4, "delivered_%d_want_4", norder);
    EXPECT(order[0] == a && order[1] == a && order[2] == b && order[3] == b, "order_%d,%d,%d,%d_want_%d,%d,%d,%d",
           order[0], order[1], order[2], order[3], a, a, b, b);
    return NULL;
}

static const char *c_unblockable(void) {
    sigset_t all, cur;
    sigfillset(&all);
    EXPECT(sigprocmask(SIG_SETMASK, &all, NULL) == 0, "setmask_errno=%d", errno);
    sigprocmask(SIG_BLOCK, NULL, &cur);
    EXPECT(!sigismember(&cur, SIGKILL) && !sigismember(&cur, SIGSTOP), "SIGKILL_or_SIGSTOP_blocked");
    EXPECT(sigismember(&cur, SIGUSR1) && sigismember(&cur, SIGSEGV) && sigismember(&cur, SIGRTMAX), "fill_not_applied");
    /* The raw call with every bit set: the kernel keeps everything except bits 8 (SIGKILL) and 18 (SIGSTOP). */
    uint64_t ones = ~0ULL, got = 0;
    EXPECT(syscall(SYS_rt_sigprocmask, SIG_SETMASK, &ones, NULL, 8) == 0, "raw_setmask_errno=%d", errno);
    EXPECT(syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &got, 8) == 0, "raw_query_errno=%d", errno);
    uint64_t want = ~((1ULL << (SIGKILL - 1)) | (1ULL << (SIGSTOP - 1)));
    EXPECT(got == want, "raw_mask=%#llx_want_%#llx", (unsigned long long)got, (unsigned long long)want);
    uint64_t none = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
    return NULL;
}

static const char *c_sigprocmask_how(void) {
    sigset_t s, old, cur;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    EXPECT(sigprocmask(SIG_BLOCK, &s, &old) == 0 && !sigismember(&old, SIGUSR1), "block1");
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    EXPECT(sigprocmask(SIG_BLOCK, &s, &old) == 0 && sigismember(&old, SIGUSR1) && !sigismember(&old, SIGUSR2), "block2_old");
    sigprocmask(SIG_BLOCK, NULL, &cur);
    EXPECT(sigismember(&cur, SIGUSR1) && sigismember(&cur, SIGUSR2), "block_does_not_accumulate");
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    EXPECT(sigprocmask(SIG_UNBLOCK, &s, NULL) == 0, "unblock");
    sigprocmask(SIG_BLOCK, NULL, &cur);
    EXPECT(!sigismember(&cur, SIGUSR1) && sigismember(&cur, SIGUSR2), "unblock_wrong");
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    EXPECT(sigprocmask(SIG_SETMASK, &s, &old) == 0 && sigismember(&old, SIGUSR2), "setmask_old");
    sigprocmask(SIG_BLOCK, NULL, &cur);
    EXPECT(sigismember(&cur, SIGTERM) && !sigismember(&cur, SIGUSR2) && !sigismember(&cur, SIGUSR1), "setmask_wrong");
    return NULL;
}

static sigset_t probe_mask, probe_ucmask;
static void h_maskprobe(int sig, siginfo_t *si, void *ucv) {
    (void)sig;
    (void)si;
    sigprocmask(SIG_BLOCK, NULL, &probe_mask);
    probe_ucmask = ((ucontext_t *)ucv)->uc_sigmask;
    hits++;
}

/* During a handler the mask is old ∪ sa_mask ∪ {sig}; uc_sigmask holds the old one; sigreturn restores it. */
static const char *c_handler_mask(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h_maskprobe;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &sa, NULL);
    mask_op(SIG_BLOCK, SIGTERM);
    kill(getpid(), SIGUSR1);
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    EXPECT(sigismember(&probe_mask, SIGUSR1), "signal_not_blocked_in_its_handler");
    EXPECT(sigismember(&probe_mask, SIGUSR2), "sa_mask_not_blocked_in_handler");
    EXPECT(sigismember(&probe_mask, SIGTERM), "old_mask_not_kept_in_handler");
    EXPECT(sigismember(&probe_ucmask, SIGTERM) && !sigismember(&probe_ucmask, SIGUSR1) && !sigismember(&probe_ucmask, SIGUSR2),
           "uc_sigmask_is_not_the_interrupted_mask");
    EXPECT(blocked(SIGTERM) && !blocked(SIGUSR1) && !blocked(SIGUSR2), "mask_not_restored_after_handler");
    return NULL;
}

static volatile int depth, maxdepth, entries, self_blocked = -1;
static void h_nest(int sig) {
    entries++;
    depth++;
    if (depth > maxdepth)
        maxdepth = depth;
    if (entries == 1) {
        self_blocked = blocked(sig);
        raise(sig);
    }
    depth--;
}

static const char *c_nodefer(void) {
    on(SIGUSR1, h_nest, SA_NODEFER);
    raise(SIGUSR1);
    EXPECT(self_blocked == 0, "signal_blocked_in_SA_NODEFER_handler");
    EXPECT(entries == 2 && maxdepth == 2, "entries=%d_maxdepth=%d_want_2_2", entries, maxdepth);
    return NULL;
}

static const char *c_deferred(void) {
    on(SIGUSR1, h_nest, 0);
    raise(SIGUSR1);
    EXPECT(self_blocked == 1, "signal_not_blocked_in_handler");
    EXPECT(entries == 2 && maxdepth == 1, "entries=%d_maxdepth=%d_want_2_1", entries, maxdepth);
    return NULL;
}

static void h_resethand(int sig) {
    hits++;
    self_blocked = blocked(sig);
}

static const char *c_resethand(void) {
    on(SIGUSR1, h_resethand, SA_RESETHAND);
    raise(SIGUSR1);
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    struct sigaction old;
    sigaction(SIGUSR1, NULL, &old);
    EXPECT(old.sa_handler == SIG_DFL, "disposition_not_reset_to_SIG_DFL");
    /* Linux: SA_RESETHAND does not imply SA_NODEFER; the signal is blocked during the handler. */
    EXPECT(self_blocked == 1, "signal_not_blocked_in_SA_RESETHAND_handler");
    return NULL;
}

/* Linux keeps a blocked signal pending even when its action is to ignore it (POSIX leaves it open). */
static const char *c_blocked_ignored_pending(void) {
    signal(SIGUSR1, SIG_IGN);
    mask_op(SIG_BLOCK, SIGUSR1);
    mask_op(SIG_BLOCK, SIGURG);
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGURG);
    EXPECT(pending(SIGUSR1), "blocked_SIG_IGN_signal_not_pending");
    EXPECT(pending(SIGURG), "blocked_default_ignored_SIGURG_not_pending");
    mask_op(SIG_UNBLOCK, SIGUSR1);
    mask_op(SIG_UNBLOCK, SIGURG);
    EXPECT(!pending(SIGUSR1) && !pending(SIGURG), "still_pending_after_unblock");
    return NULL;
}

/* Setting SIG_IGN (or SIG_DFL where the default is to ignore) discards a pending signal. */
static const char *c_ign_discards_pending(void) {
    on(SIGUSR1, h_count, 0);
    on(SIGURG, h_count, 0);
    mask_op(SIG_BLOCK, SIGUSR1);
    mask_op(SIG_BLOCK, SIGURG);
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGURG);
    EXPECT(pending(SIGUSR1) && pending(SIGURG), "not_pending");
    signal(SIGUSR1, SIG_IGN);
    EXPECT(!pending(SIGUSR1), "SIG_IGN_did_not_discard_pending");
    signal(SIGURG, SIG_DFL);
    EXPECT(!pending(SIGURG), "SIG_DFL_of_default_ignored_did_not_discard");
    on(SIGUSR1, h_count, 0);
    on(SIGURG, h_count, 0);
    mask_op(SIG_UNBLOCK, SIGUSR1);
    mask_op(SIG_UNBLOCK, SIGURG);
    EXPECT(hits == 0, "discarded_signal_delivered");
    return NULL;
}

/* Several pending standard signals, unblocked at once: lowest number first (each handler blocks all others). */
static const char *c_pending_order(void) {
    int sigs[3] = {SIGTERM, SIGUSR2, SIGUSR1};
    sigset_t s, old;
    sigemptyset(&s);
    for (int i = 0; i < 3; i++) {
        on_fullmask(sigs[i], h_order);
        sigaddset(&s, sigs[i]);
    }
    sigprocmask(SIG_BLOCK, &s, &old);
    for (int i = 0; i < 3; i++)
        kill(getpid(), sigs[i]);
    sigprocmask(SIG_SETMASK, &old, NULL);
    EXPECT(norder == 3 && order[0] == SIGUSR1 && order[1] == SIGUSR2 && order[2] == SIGTERM, "order_%d_%d,%d,%d_want_10,12,15",
           norder, order[0], order[1], order[2]);
    return NULL;
}

/* Without sa_mask, Linux sets up one frame per pending signal before returning to user mode (lowest number
 * first, each on top of the previous): the highest-numbered handler runs first, nested in the others. */
static const char *c_pending_nested(void) {
    int sigs[3] = {SIGTERM, SIGUSR2, SIGUSR1};
    sigset_t s, old;
    sigemptyset(&s);
    for (int i = 0; i < 3; i++) {
        on(sigs[i], h_order, 0);
        sigaddset(&s, sigs[i]);
    }
    sigprocmask(SIG_BLOCK, &s, &old);
    for (int i = 0; i < 3; i++)
        kill(getpid(), sigs[i]);
    sigprocmask(SIG_SETMASK, &old, NULL);
    EXPECT(norder == 3 && order[0] == SIGTERM && order[1] == SIGUSR2 && order[2] == SIGUSR1,
           "handler_entry_order_%d_%d,%d,%d_want_15,12,10", norder, order[0], order[1], order[2]);
    return NULL;
}

static void h_ucmask(int sig, siginfo_t *si, void *ucv) {
    (void)sig;
    (void)si;
    ucontext_t *uc = ucv;
    sigaddset(&uc->uc_sigmask, SIGUSR2);
    sigaddset(&uc->uc_sigmask, SIGKILL);
    hits++;
}

static const char *c_sigreturn_ucmask(void) {
    on_info(SIGUSR1, h_ucmask, 0);
    kill(getpid(), SIGUSR1);
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    EXPECT(blocked(SIGUSR2), "uc_sigmask_change_not_applied_by_sigreturn");
    EXPECT(!blocked(SIGKILL) && !blocked(SIGUSR1), "sigreturn_mask_has_SIGKILL_or_SIGUSR1");
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* register state across handlers */

static void h_fpclobber(int sig) {
    (void)sig;
    unsigned rz = 0x7f80; /* round toward zero */
    __asm__ volatile("ldmxcsr %0" ::"m"(rz));
    volatile double d = 1.0;
    for (int i = 0; i < 20; i++)
        d = d / 3.0 + 0.1;
    __asm__ volatile("pcmpeqd %%xmm0,%%xmm0\n\tpcmpeqd %%xmm1,%%xmm1\n\tpcmpeqd %%xmm2,%%xmm2\n\tpcmpeqd %%xmm3,%%xmm3\n\t"
                     "pcmpeqd %%xmm4,%%xmm4\n\tpcmpeqd %%xmm5,%%xmm5\n\tpcmpeqd %%xmm6,%%xmm6\n\tpcmpeqd %%xmm7,%%xmm7\n\t"
                     "pcmpeqd %%xmm8,%%xmm8\n\tpcmpeqd %%xmm9,%%xmm9\n\tpcmpeqd %%xmm10,%%xmm10\n\tpcmpeqd %%xmm11,%%xmm11\n\t"
                     "pcmpeqd %%xmm12,%%xmm12\n\tpcmpeqd %%xmm13,%%xmm13\n\tpcmpeqd %%xmm14,%%xmm14\n\tpcmpeqd %%xmm15,%%xmm15\n\t"
                     "mov $-1,%%rax\n\tmov $-1,%%rcx\n\tmov $-1,%%rdx\n\tmov $-1,%%rsi\n\tmov $-1,%%rdi\n\t"
                     "mov $-1,%%r8\n\tmov $-1,%%r9\n\tmov $-1,%%r10\n\tmov $-1,%%r11\n\t" ::
                         : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "xmm0", "xmm1", "xmm2", "xmm3",
                           "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
                           "xmm15", "memory");
    hits++;
}

__attribute__((noinline)) static double sum_loop(int with_raise) {
    double sum = 0.0, x = 0.1;
    for (int i = 0; i < 400; i++) {
        sum += x * i / 7.0;
        if (with_raise && i % 25 == 0)
            raise(SIGUSR1);
    }
    return sum;
}

static const char *c_fp_sum(void) {
    on(SIGUSR1, h_fpclobber, 0);
    unsigned m_in = 0x3f80, m_out = 0; /* round down */
    __asm__ volatile("ldmxcsr %0" ::"m"(m_in));
    double want = sum_loop(0);
    double got = sum_loop(1);
    __asm__ volatile("stmxcsr %0" : "=m"(m_out));
    unsigned def = 0x1f80;
    __asm__ volatile("ldmxcsr %0" ::"m"(def));
    EXPECT(hits == 16, "handler_ran_%d_times_want_16", (int)hits);
    /* Compare the control bits only: the exception flags (bits 0-5) are sticky and the loop sets PE itself. */
    EXPECT((m_out & ~0x3fu) == m_in, "mxcsr=%#x_want_%#x_(flags_ignored)", m_out, m_in);
    EXPECT(got == want, "sum_changed_by_handlers");
    return NULL;
}

/* sig_regs_spin(t): loads 13 general registers, xmm0-15, MXCSR, the x87 control word, sets DF and writes 16
 * canaries into the red zone, then spins until a SIGALRM handler has interrupted the loop 3 times (or a limit),
 * and stores everything back. t[] layout, in 8-byte words: */
enum {
    T_GIN = 0,    /* rbx rcx rdx rsi rdi r8 r9 r10 r11 r12 r13 r14 r15 */
    T_GOUT = 13,
    T_XIN = 26,   /* xmm0..15, two words each */
    T_XOUT = 58,
    T_MXIN = 90,
    T_MXOUT = 91,
    T_TICKS = 92, /* pointer to the int the handler counts loop hits in */
    T_LIMIT = 93,
    T_RZBAD = 94,
    T_LEFT = 95,
    T_CWIN = 96,
    T_CWOUT = 97,
    T_FLOUT = 98,
    T_N = 99,
};

__asm__(".text\n"
        ".p2align 4\n"
        ".type sig_regs_spin,@function\n"
        "sig_regs_spin:\n"
        "  push %rbx\n  push %rbp\n  push %r12\n  push %r13\n  push %r14\n  push %r15\n  push %rdi\n"
        "  ldmxcsr 720(%rdi)\n"
        "  fldcw 768(%rdi)\n"
        "  movdqu 208(%rdi),%xmm0\n  movdqu 224(%rdi),%xmm1\n  movdqu 240(%rdi),%xmm2\n  movdqu 256(%rdi),%xmm3\n"
        "  movdqu 272(%rdi),%xmm4\n  movdqu 288(%rdi),%xmm5\n  movdqu 304(%rdi),%xmm6\n  movdqu 320(%rdi),%xmm7\n"
        "  movdqu 336(%rdi),%xmm8\n  movdqu 352(%rdi),%xmm9\n  movdqu 368(%rdi),%xmm10\n  movdqu 384(%rdi),%xmm11\n"
        "  movdqu 400(%rdi),%xmm12\n  movdqu 416(%rdi),%xmm13\n  movdqu 432(%rdi),%xmm14\n  movdqu 448(%rdi),%xmm15\n"
        "  mov 736(%rdi),%rbp\n"
        "  mov 744(%rdi),%rax\n"
        "  .irp i,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16\n"
        "  movq $(\\i*0x01010101),-8*\\i(%rsp)\n"
        "  .endr\n"
        "  mov 0(%rdi),%rbx\n  mov 8(%rdi),%rcx\n  mov 16(%rdi),%rdx\n  mov 24(%rdi),%rsi\n"
        "  mov 40(%rdi),%r8\n  mov 48(%rdi),%r9\n  mov 56(%rdi),%r10\n  mov 64(%rdi),%r11\n"
        "  mov 72(%rdi),%r12\n  mov 80(%rdi),%r13\n  mov 88(%rdi),%r14\n  mov 96(%rdi),%r15\n"
        "  mov 32(%rdi),%rdi\n"
        "  std\n"
        ".globl sig_regs_loop\n"
        "sig_regs_loop:\n"
        "  cmpl $3,(%rbp)\n"
        "  jge 2f\n"
        "  dec %rax\n"
        "  jnz sig_regs_loop\n"
        ".globl sig_regs_loop_end\n"
        "sig_regs_loop_end:\n"
        "2:\n"
        "  xchg %rdi,(%rsp)\n"
        "  mov %rbx,104(%rdi)\n  mov %rcx,112(%rdi)\n  mov %rdx,120(%rdi)\n  mov %rsi,128(%rdi)\n"
        "  mov (%rsp),%rbx\n  mov %rbx,136(%rdi)\n"
        "  mov %r8,144(%rdi)\n  mov %r9,152(%rdi)\n  mov %r10,160(%rdi)\n  mov %r11,168(%rdi)\n"
        "  mov %r12,176(%rdi)\n  mov %r13,184(%rdi)\n  mov %r14,192(%rdi)\n  mov %r15,200(%rdi)\n"
        "  xor %ecx,%ecx\n" /* the red zone first: pushf below writes into it */
        "  .irp i,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16\n"
        "  cmpq $(\\i*0x01010101),-8*\\i(%rsp)\n"
        "  je 3f\n"
        "  inc %rcx\n"
        "3:\n"
        "  .endr\n"
        "  mov %rcx,752(%rdi)\n"
        "  pushf\n"
        "  pop %rbp\n"
        "  cld\n"
        "  mov %rbp,784(%rdi)\n"
        "  movdqu %xmm0,464(%rdi)\n  movdqu %xmm1,480(%rdi)\n  movdqu %xmm2,496(%rdi)\n  movdqu %xmm3,512(%rdi)\n"
        "  movdqu %xmm4,528(%rdi)\n  movdqu %xmm5,544(%rdi)\n  movdqu %xmm6,560(%rdi)\n  movdqu %xmm7,576(%rdi)\n"
        "  movdqu %xmm8,592(%rdi)\n  movdqu %xmm9,608(%rdi)\n  movdqu %xmm10,624(%rdi)\n  movdqu %xmm11,640(%rdi)\n"
        "  movdqu %xmm12,656(%rdi)\n  movdqu %xmm13,672(%rdi)\n  movdqu %xmm14,688(%rdi)\n  movdqu %xmm15,704(%rdi)\n"
        "  stmxcsr 728(%rdi)\n"
        "  fnstcw 776(%rdi)\n"
        "  mov %rax,760(%rdi)\n"
        "  pop %rax\n  pop %r15\n  pop %r14\n  pop %r13\n  pop %r12\n  pop %rbp\n  pop %rbx\n"
        "  ret\n"
        ".size sig_regs_spin,.-sig_regs_spin\n");

void sig_regs_spin(uint64_t *t);
extern char sig_regs_loop[], sig_regs_loop_end[];

static uint64_t rt[T_N];
static volatile int rt_ticks, rt_outside, rt_recorded;
static unsigned rt_entry_mxcsr, rt_entry_cw = 0xffff;
static uint64_t rt_entry_flags, rt_uc_flags, rt_uc_greg[13], rt_uc_mxcsr, rt_uc_xmm3[2], rt_uc_fpregs_null;

static void h_regs(int sig, siginfo_t *si, void *ucv) {
    (void)sig;
    (void)si;
    uint64_t fl;
    unsigned m;
    unsigned short cw;
    __asm__ volatile("pushf\n\tpop %0" : "=r"(fl));
    __asm__ volatile("stmxcsr %0" : "=m"(m));
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    ucontext_t *uc = ucv;
    uintptr_t rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    int in_loop = rip >= (uintptr_t)sig_regs_loop && rip < (uintptr_t)sig_regs_loop_end;
    if (in_loop && !rt_recorded) {
        rt_recorded = 1;
        rt_entry_flags = fl;
        rt_entry_mxcsr = m;
        rt_entry_cw = cw;
        rt_uc_flags = (uint64_t)uc->uc_mcontext.gregs[REG_EFL];
        static const int regs[13] = {REG_RBX, REG_RCX, REG_RDX, REG_RSI, REG_RDI, REG_R8, REG_R9,
                                     REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15};
        for (int i = 0; i < 13; i++)
            rt_uc_greg[i] = (uint64_t)uc->uc_mcontext.gregs[regs[i]];
        if (uc->uc_mcontext.fpregs) {
            rt_uc_mxcsr = uc->uc_mcontext.fpregs->mxcsr;
            memcpy(rt_uc_xmm3, &uc->uc_mcontext.fpregs->_xmm[3], 16);
        } else {
            rt_uc_fpregs_null = 1;
        }
    }
    /* Clobber what the interrupted loop holds: FP control, xmm, caller-saved general registers. */
    unsigned rz = 0x7f80;
    unsigned short cwz = 0x0f7f;
    __asm__ volatile("ldmxcsr %0\n\tfldcw %1" ::"m"(rz), "m"(cwz));
    h_fpclobber(0);
    hits--;
    if (in_loop)
        rt_ticks++;
    else
        rt_outside++;
}

enum { R_GPRS, R_XMM, R_FPCTL, R_DF, R_REDZONE, R_FRESH_FPU, R_UC_GREGS, R_UC_FPREGS };

static const char *regs_run(int which) {
    for (int i = 0; i < 13; i++)
        rt[T_GIN + i] = 0x0123456789abcdefULL ^ ((uint64_t)(i + 1) * 0x1101010101010111ULL);
    for (int i = 0; i < 32; i++)
        rt[T_XIN + i] = 0xfeedface00000000ULL + (uint64_t)i * 0x10001ULL;
    rt[T_MXIN] = 0xbf80; /* flush-to-zero, round down */
    rt[T_CWIN] = 0x077f; /* x87 round down */
    rt[T_TICKS] = (uint64_t)(uintptr_t)&rt_ticks;
    rt[T_LIMIT] = 400000000ULL;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h_regs;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    arm_ms(3, 3);
    step("spin");
    sig_regs_spin(rt);
    disarm();
    unsigned def = 0x1f80;
    unsigned short defcw = 0x037f;
    __asm__ volatile("ldmxcsr %0\n\tfldcw %1" ::"m"(def), "m"(defcw));
    EXPECT(rt_ticks >= 3, "loop_interrupted_%d_times_outside_%d_left=%llu", rt_ticks, rt_outside,
           (unsigned long long)rt[T_LEFT]);
    static const char *names[13] = {"rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"};
    switch (which) {
    case R_GPRS:
        for (int i = 0; i < 13; i++)
            EXPECT(rt[T_GOUT + i] == rt[T_GIN + i], "%s=%#llx_want_%#llx", names[i], (unsigned long long)rt[T_GOUT + i],
                   (unsigned long long)rt[T_GIN + i]);
        break;
    case R_XMM:
        for (int i = 0; i < 32; i++)
            EXPECT(rt[T_XOUT + i] == rt[T_XIN + i], "xmm%d_word%d=%#llx_want_%#llx", i / 2, i % 2,
                   (unsigned long long)rt[T_XOUT + i], (unsigned long long)rt[T_XIN + i]);
        break;
    case R_FPCTL:
        EXPECT(rt[T_MXOUT] == rt[T_MXIN], "mxcsr=%#llx_want_%#llx", (unsigned long long)rt[T_MXOUT],
               (unsigned long long)rt[T_MXIN]);
        EXPECT((rt[T_CWOUT] & 0xffff) == rt[T_CWIN], "x87_cw=%#llx_want_%#llx", (unsigned long long)(rt[T_CWOUT] & 0xffff),
               (unsigned long long)rt[T_CWIN]);
        break;
    case R_DF:
        EXPECT(!(rt_entry_flags & 0x400), "DF_set_on_handler_entry_rflags=%#llx", (unsigned long long)rt_entry_flags);
        EXPECT(rt_uc_flags & 0x400, "uc_REG_EFL_lacks_DF=%#llx", (unsigned long long)rt_uc_flags);
        EXPECT(rt[T_FLOUT] & 0x400, "DF_not_restored_rflags=%#llx", (unsigned long long)rt[T_FLOUT]);
        break;
    case R_REDZONE:
        EXPECT(rt[T_RZBAD] == 0, "%llu_of_16_red_zone_words_clobbered", (unsigned long long)rt[T_RZBAD]);
        break;
    case R_FRESH_FPU:
        /* Linux starts every handler with the initial FPU state (fpu__clear_user_states). */
        EXPECT(rt_entry_mxcsr == 0x1f80, "handler_entry_mxcsr=%#x_want_0x1f80", rt_entry_mxcsr);
        EXPECT(rt_entry_cw == 0x037f, "handler_entry_x87_cw=%#x_want_0x37f", rt_entry_cw);
        break;
    case R_UC_GREGS:
        for (int i = 0; i < 13; i++)
            EXPECT(rt_uc_greg[i] == rt[T_GIN + i], "uc_%s=%#llx_want_%#llx", names[i], (unsigned long long)rt_uc_greg[i],
                   (unsigned long long)rt[T_GIN + i]);
        break;
    case R_UC_FPREGS:
        EXPECT(!rt_uc_fpregs_null, "uc_mcontext.fpregs_is_NULL");
        EXPECT(rt_uc_mxcsr == rt[T_MXIN], "fpregs_mxcsr=%#llx_want_%#llx", (unsigned long long)rt_uc_mxcsr,
               (unsigned long long)rt[T_MXIN]);
        EXPECT(rt_uc_xmm3[0] == rt[T_XIN + 6] && rt_uc_xmm3[1] == rt[T_XIN + 7], "fpregs_xmm3=%#llx:%#llx",
               (unsigned long long)rt_uc_xmm3[0], (unsigned long long)rt_uc_xmm3[1]);
        break;
    }
    return NULL;
}

static const char *c_regs_gprs(void) { return regs_run(R_GPRS); }
static const char *c_regs_xmm(void) { return regs_run(R_XMM); }
static const char *c_regs_fpctl(void) { return regs_run(R_FPCTL); }
static const char *c_regs_df(void) { return regs_run(R_DF); }
static const char *c_regs_redzone(void) { return regs_run(R_REDZONE); }
static const char *c_regs_fresh_fpu(void) { return regs_run(R_FRESH_FPU); }
static const char *c_regs_uc_gregs(void) { return regs_run(R_UC_GREGS); }
static const char *c_regs_uc_fpregs(void) { return regs_run(R_UC_FPREGS); }

static volatile uintptr_t frame_addr[2];
static void h_align(int sig) {
    (void)sig;
    /* At handler entry rsp % 16 == 8 (as after a call), so the frame pointer is 16-byte aligned. */
    frame_addr[hits++ & 1] = (uintptr_t)__builtin_frame_address(0);
}

static const char *c_stack_aligned(void) {
    on(SIGUSR1, h_align, 0);
    on(SIGUSR2, h_align, SA_ONSTACK);
    char *mem = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(mem != MAP_FAILED, "mmap_errno=%d", errno);
    stack_t ss = {.ss_sp = mem + 8, .ss_size = 65536 - 8 - 24, .ss_flags = 0}; /* deliberately misaligned top */
    EXPECT(sigaltstack(&ss, NULL) == 0, "sigaltstack_errno=%d", errno);
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGUSR2);
    EXPECT(hits == 2, "handlers_ran_%d", (int)hits);
    EXPECT(frame_addr[0] % 16 == 0, "normal_stack_frame=%#lx_misaligned", (unsigned long)frame_addr[0]);
    EXPECT(frame_addr[1] % 16 == 0, "altstack_frame=%#lx_misaligned", (unsigned long)frame_addr[1]);
    EXPECT(frame_addr[1] >= (uintptr_t)mem && frame_addr[1] < (uintptr_t)mem + 65536, "SA_ONSTACK_handler_not_on_altstack");
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* hardware exceptions */

static volatile uintptr_t fault_addr, fault_rip;
static volatile int fault_code, fault_signo;
static volatile uint64_t fault_trapno, fault_err, fault_cr2;

static void record_fault(int sig, siginfo_t *si, ucontext_t *uc) {
    fault_signo = sig;
    fault_addr = (uintptr_t)si->si_addr;
    fault_code = si->si_code;
    fault_rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    fault_trapno = (uint64_t)uc->uc_mcontext.gregs[REG_TRAPNO];
    fault_err = (uint64_t)uc->uc_mcontext.gregs[REG_ERR];
    fault_cr2 = (uint64_t)uc->uc_mcontext.gregs[REG_CR2];
}

static void h_ill_skip(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    record_fault(sig, si, uc);
    hits++;
    if (hits > 3)
        _exit(60);
    uc->uc_mcontext.gregs[REG_RIP] += 2; /* past the ud2 */
}

static const char *c_sigill_ud2(void) {
    on_info(SIGILL, h_ill_skip, 0);
    uintptr_t at;
    __asm__ volatile("lea 1f(%%rip),%0\n1:\tud2" : "=r"(at));
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    EXPECT(fault_signo == SIGILL, "signo=%d", fault_signo);
    EXPECT(fault_code == ILL_ILLOPN, "si_code=%d_want_ILL_ILLOPN_2", fault_code);
    EXPECT(fault_addr == at, "si_addr=%#lx_want_ud2_at_%#lx", (unsigned long)fault_addr, (unsigned long)at);
    EXPECT(fault_rip == at, "uc_rip=%#lx_want_%#lx", (unsigned long)fault_rip, (unsigned long)at);
    return NULL;
}

static void h_ill_edit(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    record_fault(sig, si, uc);
    hits++;
    if (hits > 3)
        _exit(60);
    uc->uc_mcontext.gregs[REG_RIP] += 2;
    uc->uc_mcontext.gregs[REG_RAX] = 0x1234567890LL;
    uc->uc_mcontext.gregs[REG_R11] = 0x1111;
    if (uc->uc_mcontext.fpregs) {
        uint32_t v[4] = {1, 2, 3, 4};
        memcpy(&uc->uc_mcontext.fpregs->_xmm[1], v, 16);
        uc->uc_mcontext.fpregs->mxcsr = 0x3f80;
    }
}

/* sigreturn loads what the handler left in the ucontext: general registers, xmm, MXCSR. */
static const char *c_sigreturn_applies_context(void) {
    on_info(SIGILL, h_ill_edit, 0);
    uint64_t rax_out = 0, r11_out = 0;
    uint32_t x1[4] = {0, 0, 0, 0};
    unsigned mx = 0;
    __asm__ volatile("xor %%eax,%%eax\n\txor %%r11d,%%r11d\n\tpxor %%xmm1,%%xmm1\n\tud2\n\t"
                     "mov %%rax,%0\n\tmov %%r11,%1\n\tmovdqu %%xmm1,%2\n\tstmxcsr %3"
                     : "=m"(rax_out), "=m"(r11_out), "=m"(x1), "=m"(mx)
                     :
                     : "rax", "r11", "xmm1", "memory");
    unsigned def = 0x1f80;
    __asm__ volatile("ldmxcsr %0" ::"m"(def));
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    EXPECT(rax_out == 0x1234567890ULL, "rax=%#llx_want_0x1234567890", (unsigned long long)rax_out);
    EXPECT(r11_out == 0x1111, "r11=%#llx_want_0x1111", (unsigned long long)r11_out);
    EXPECT(x1[0] == 1 && x1[1] == 2 && x1[2] == 3 && x1[3] == 4, "xmm1=%x,%x,%x,%x_want_1,2,3,4", x1[0], x1[1], x1[2], x1[3]);
    EXPECT(mx == 0x3f80, "mxcsr=%#x_want_0x3f80", mx);
    return NULL;
}

static char *volatile segv_page;
static void h_segv_fix(int sig, siginfo_t *si, void *ucv) {
    record_fault(sig, si, ucv);
    hits++;
    if (hits > 3)
        _exit(61);
    mprotect(segv_page, 4096, PROT_READ | PROT_WRITE);
}

static const char *c_segv_accerr(void) {
    segv_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(segv_page != MAP_FAILED, "mmap_errno=%d", errno);
    on_info(SIGSEGV, h_segv_fix, 0);
    volatile char *p = segv_page + 0x10;
    *p = 42;
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    EXPECT(fault_code == SEGV_ACCERR, "si_code=%d_want_SEGV_ACCERR_2", fault_code);
    EXPECT(fault_addr == (uintptr_t)p, "si_addr=%#lx_want_%#lx", (unsigned long)fault_addr, (unsigned long)(uintptr_t)p);
    EXPECT(segv_page[0x10] == 42, "write_not_retried");
    return NULL;
}

static sigjmp_buf jump;
static void h_fault_jump(int sig, siginfo_t *si, void *ucv) {
    record_fault(sig, si, ucv);
    hits++;
    siglongjmp(jump, 1);
}

static const char *c_segv_maperr(void) {
    char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(p != MAP_FAILED, "mmap_errno=%d", errno);
    EXPECT(munmap(p, 4096) == 0, "munmap_errno=%d", errno);
    on_info(SIGSEGV, h_fault_jump, 0);
    volatile int *q = (volatile int *)(p + 0x20);
    if (sigsetjmp(jump, 1) == 0) {
        (void)*q;
        return fail("read_of_unmapped_page_succeeded");
    }
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    EXPECT(fault_signo == SIGSEGV, "signo=%d", fault_signo);
    EXPECT(fault_code == SEGV_MAPERR, "si_code=%d_want_SEGV_MAPERR_1", fault_code);
    EXPECT(fault_addr == (uintptr_t)q, "si_addr=%#lx_want_%#lx", (unsigned long)fault_addr, (unsigned long)(uintptr_t)q);
    EXPECT(!blocked(SIGSEGV), "siglongjmp_left_SIGSEGV_blocked");
    return NULL;
}

static void h_trap_record(int sig, siginfo_t *si, void *ucv) {
    record_fault(sig, si, ucv);
    hits++;
    if (sig != SIGTRAP)
        siglongjmp(jump, 1);
}

/* uc_mcontext.gregs[REG_TRAPNO], [REG_ERR] and [REG_CR2] as Linux fills them for each exception. */
static const char *c_mcontext_trapno(void) {
    on_info(SIGSEGV, h_trap_record, 0);
    on_info(SIGILL, h_trap_record, 0);
    on_info(SIGFPE, h_trap_record, 0);
    on_info(SIGTRAP, h_trap_record, 0);
    char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(page != MAP_FAILED, "mmap_errno=%d", errno);
    step("page_fault");
    if (sigsetjmp(jump, 1) == 0) {
        *(volatile char *)(page + 0x30) = 1;
        return fail("write_succeeded");
    }
    EXPECT(fault_trapno == 14, "page_fault_trapno=%llu_want_14", (unsigned long long)fault_trapno);
    EXPECT((fault_err & 6) == 6, "page_fault_err=%#llx_want_write|user_(6)", (unsigned long long)fault_err);
    EXPECT(fault_cr2 == (uintptr_t)page + 0x30, "cr2=%#llx_want_%#lx", (unsigned long long)fault_cr2,
           (unsigned long)(uintptr_t)page + 0x30);
    step("ud2");
    if (sigsetjmp(jump, 1) == 0) {
        __asm__ volatile("ud2");
        return fail("ud2_returned");
    }
    EXPECT(fault_trapno == 6 && fault_err == 0, "ud2_trapno=%llu_err=%llu_want_6_0", (unsigned long long)fault_trapno,
           (unsigned long long)fault_err);
    step("divide_error");
    if (sigsetjmp(jump, 1) == 0) {
        volatile int a = 1, b = 0;
        volatile int c = a / b;
        (void)c;
        return fail("division_by_zero_returned");
    }
    EXPECT(fault_trapno == 0 && fault_err == 0, "divide_trapno=%llu_err=%llu_want_0_0", (unsigned long long)fault_trapno,
           (unsigned long long)fault_err);
    step("int3");
    __asm__ volatile("int3");
    EXPECT(fault_signo == SIGTRAP && fault_trapno == 3 && fault_err == 0, "int3_signo=%d_trapno=%llu_err=%llu_want_5_3_0",
           fault_signo, (unsigned long long)fault_trapno, (unsigned long long)fault_err);
    return NULL;
}

static void h_fpe_exit(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    if (sig != SIGFPE || si->si_signo != SIGFPE)
        _exit(9);
    if (si->si_code != FPE_INTDIV)
        _exit(10 + (si->si_code & 15));
    if ((uintptr_t)si->si_addr != (uintptr_t)uc->uc_mcontext.gregs[REG_RIP])
        _exit(30);
    _exit(42);
}

static const char *fpe_check(int a_val, int b_val) {
    pid_t c = spawn();
    if (c == 0) {
        on_info(SIGFPE, h_fpe_exit, 0);
        volatile int a = a_val, b = b_val;
        volatile int q = a / b;
        (void)q;
        _exit(1);
    }
    const char *why = expect_end(c, 0, 42);
    EXPECT(!why, "%s_(exit_1:no_signal,10+n:si_code=n,30:si_addr!=rip)", why);
    return NULL;
}

static const char *c_sigfpe_intdiv(void) { return fpe_check(1, 0); }
static const char *c_sigfpe_overflow(void) { return fpe_check(INT_MIN, -1); } /* Linux: FPE_INTDIV for every #DE */

static void h_trap(int sig, siginfo_t *si, void *ucv) {
    record_fault(sig, si, ucv);
    hits++;
}

static const char *c_sigtrap_int3(void) {
    on_info(SIGTRAP, h_trap, 0);
    uintptr_t after;
    step("int3");
    __asm__ volatile("lea 1f(%%rip),%0\n\tint3\n1:" : "=r"(after));
    EXPECT(hits == 1, "handler_ran_%d_times", (int)hits);
    EXPECT(fault_signo == SIGTRAP, "signo=%d", fault_signo);
    EXPECT(fault_rip == after, "uc_rip=%#lx_want_after_int3_%#lx", (unsigned long)fault_rip, (unsigned long)after);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* default actions and deaths */

static const char *c_default_term(void) {
    pid_t c = spawn();
    if (c == 0) {
        raise(SIGTERM);
        _exit(1);
    }
    return expect_end(c, SIGTERM, 0);
}

static const char *c_default_usr1(void) {
    pid_t c = spawn();
    if (c == 0) {
        kill(getpid(), SIGUSR1);
        _exit(1);
    }
    return expect_end(c, SIGUSR1, 0);
}

static const char *c_default_segv(void) {
    pid_t c = spawn();
    if (c == 0) {
        null_write();
        _exit(1);
    }
    return expect_end(c, SIGSEGV, 0);
}

static const char *c_default_ignored(void) {
    pid_t c = spawn();
    if (c == 0) {
        raise(SIGCHLD);
        raise(SIGURG);
        raise(SIGWINCH);
        raise(SIGCONT);
        kill(getpid(), SIGCHLD);
        _exit(0);
    }
    return expect_end(c, 0, 0);
}

static const char *c_ign_term(void) {
    pid_t c = spawn();
    if (c == 0) {
        signal(SIGTERM, SIG_IGN);
        raise(SIGTERM);
        kill(getpid(), SIGTERM);
        _exit(0);
    }
    const char *why = expect_end(c, 0, 0);
    if (why)
        return why;
    /* And from another process; SIG_IGN is inherited across fork (set before it: no race with the kill). */
    signal(SIGTERM, SIG_IGN);
    c = spawn();
    if (c == 0) {
        step("ignoring_sigterm");
        for (int i = 0; i < 20; i++)
            sleep_ms(5);
        _exit(0);
    }
    sleep_ms(30);
    kill(c, SIGTERM);
    return expect_end(c, 0, 0);
}

static const char *c_abort(void) {
    pid_t c = spawn();
    if (c == 0) {
        on(SIGABRT, h_count, 0);
        abort();
        _exit(1);
    }
    return expect_end(c, SIGABRT, 0);
}

static const char *c_sigkill_all_blocked(void) {
    pid_t c = spawn();
    if (c == 0) {
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        for (int i = 1; i < 32; i++)
            if (i != SIGKILL && i != SIGSTOP)
                signal(i, SIG_IGN);
        idle_child();
    }
    sleep_ms(20);
    kill(c, SIGKILL);
    return expect_end(c, SIGKILL, 0);
}

static const char *c_fault_blocked(void) {
    pid_t c = spawn();
    if (c == 0) {
        on(SIGSEGV, h_exit50, 0);
        mask_op(SIG_BLOCK, SIGSEGV);
        null_write();
        _exit(1);
    }
    const char *why = expect_end(c, SIGSEGV, 0);
    EXPECT(!why, "%s_(exit_50:handler_ran_while_blocked)", why);
    return NULL;
}

static const char *c_fault_ignored(void) {
    pid_t c = spawn();
    if (c == 0) {
        signal(SIGSEGV, SIG_IGN);
        null_write();
        _exit(1);
    }
    return expect_end(c, SIGSEGV, 0);
}

static void h_segv_again(int sig) {
    (void)sig;
    hits++;
    if (hits > 1)
        _exit(51);
    null_write();
}

static const char *c_fault_in_handler(void) {
    pid_t c = spawn();
    if (c == 0) {
        on(SIGSEGV, h_segv_again, 0);
        null_write();
        _exit(1);
    }
    const char *why = expect_end(c, SIGSEGV, 0);
    EXPECT(!why, "%s_(exit_51:handler_reentered)", why);
    return NULL;
}

static const char *c_ill_blocked(void) {
    pid_t c = spawn();
    if (c == 0) {
        on(SIGILL, h_exit50, 0);
        mask_op(SIG_BLOCK, SIGILL);
        __asm__ volatile("ud2");
        _exit(1);
    }
    return expect_end(c, SIGILL, 0);
}

static void h_to_garbage(int sig, siginfo_t *si, void *ucv) {
    (void)sig;
    (void)si;
    ((ucontext_t *)ucv)->uc_mcontext.gregs[REG_RIP] = 0x10;
}

static const char *c_return_to_garbage(void) {
    pid_t c = spawn();
    if (c == 0) {
        on_info(SIGUSR1, h_to_garbage, 0);
        raise(SIGUSR1);
        _exit(1);
    }
    return expect_end(c, SIGSEGV, 0);
}

/* ------------------------------------------------------------------------------------------------------------- */
/* stop and continue */

static const char *c_stop_continue(void) {
    pid_t c = spawn();
    if (c == 0)
        idle_child();
    int st = 0;
    EXPECT(kill(c, SIGSTOP) == 0, "kill_SIGSTOP_errno=%d", errno);
    pid_t r = wait_for(c, &st, WUNTRACED, 3000);
    if (r != c || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGSTOP) {
        reap(c);
        return fail("stop_wait=%d_%s", (int)r, describe(st));
    }
    EXPECT(st == 0x137f, "stopped_status=%#x_want_0x137f", st);
    r = waitpid(c, &st, WUNTRACED | WNOHANG);
    if (r != 0) {
        reap(c);
        return fail("stop_reported_twice_r=%d", (int)r);
    }
    kill(c, SIGCONT);
    r = wait_for(c, &st, WCONTINUED, 3000);
    if (r != c || !WIFCONTINUED(st)) {
        reap(c);
        return fail("continue_wait=%d_status=%#x", (int)r, st);
    }
    EXPECT(st == 0xffff, "continued_status=%#x_want_0xffff", st);
    kill(c, SIGKILL);
    r = wait_for(c, &st, 0, 3000);
    EXPECT(r == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "kill_wait=%d_%s", (int)r, describe(st));
    return NULL;
}

/* A stopped process does not act on SIGTERM (default action: terminate) until it is continued; then it dies. */
static const char *c_stopped_term_waits(void) {
    pid_t c = spawn();
    if (c == 0)
        idle_child();
    int st = 0;
    kill(c, SIGSTOP);
    pid_t r = wait_for(c, &st, WUNTRACED, 3000);
    if (r != c || !WIFSTOPPED(st)) {
        reap(c);
        return fail("not_stopped_%s", describe(st));
    }
    kill(c, SIGTERM);
    r = wait_for(c, &st, 0, 100);
    if (r != 0) {
        reap(c);
        return fail("stopped_child_ended_before_SIGCONT_%s", describe(st));
    }
    kill(c, SIGCONT);
    return expect_end(c, SIGTERM, 0);
}

static volatile sig_atomic_t cont_seen;
static void h_cont(int sig) {
    (void)sig;
    cont_seen = 1;
}

static const char *c_sigcont_handler(void) {
    on(SIGCONT, h_cont, 0); /* inherited: installed before the child could be stopped */
    pid_t c = spawn();
    if (c == 0) {
        for (int i = 0; i < 400 && !cont_seen; i++)
            sleep_ms(5);
        _exit(cont_seen ? 33 : 34);
    }
    sleep_ms(10);
    int st = 0;
    kill(c, SIGSTOP);
    pid_t r = wait_for(c, &st, WUNTRACED, 3000);
    if (r != c || !WIFSTOPPED(st)) {
        reap(c);
        return fail("not_stopped_%s", describe(st));
    }
    kill(c, SIGCONT);
    return expect_end(c, 0, 33);
}

/* A nanosleep stopped and continued (no handler) resumes and sleeps its full time, returning 0. */
static const char *c_nanosleep_after_stop(void) {
    pid_t c = spawn();
    if (c == 0) {
        long long t0 = now_ns();
        struct timespec req = {0, 200000000}, rem = {0, 0};
        int r = nanosleep(&req, &rem);
        long long ms = ms_since(t0);
        _exit(r != 0 ? 1 : ms < 190 ? 2 : 0);
    }
    sleep_ms(40);
    int st = 0;
    kill(c, SIGSTOP);
    pid_t r = wait_for(c, &st, WUNTRACED, 3000);
    if (r != c || !WIFSTOPPED(st)) {
        reap(c);
        return fail("not_stopped_%s", describe(st));
    }
    sleep_ms(20);
    kill(c, SIGCONT);
    const char *why = expect_end(c, 0, 0);
    EXPECT(!why, "%s_(1:nanosleep_failed,2:returned_early)", why);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* SIGCHLD */

static volatile int chld_n;
static volatile int chld_code[8], chld_status[8], chld_pid[8];
static void h_chld(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    if (chld_n < 8) {
        chld_code[chld_n] = si->si_code;
        chld_status[chld_n] = si->si_status;
        chld_pid[chld_n] = si->si_pid;
    }
    chld_n++;
}

static int wait_count(volatile int *n, int want, int ms) {
    long long t0 = now_ns();
    while (*n < want && ms_since(t0) < ms)
        sleep_ms(1);
    return *n >= want;
}

static const char *c_sigchld_exited(void) {
    on_info(SIGCHLD, h_chld, 0);
    pid_t c = spawn();
    if (c == 0)
        _exit(7);
    EXPECT(wait_count(&chld_n, 1, 3000), "no_SIGCHLD");
    int st;
    EXPECT(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 7, "waitpid_%s", describe(st));
    EXPECT(chld_code[0] == CLD_EXITED, "si_code=%d_want_CLD_EXITED_1", chld_code[0]);
    EXPECT(chld_pid[0] == c, "si_pid=%d_want_%d", chld_pid[0], (int)c);
    EXPECT(chld_status[0] == 7, "si_status=%d_want_7", chld_status[0]);
    return NULL;
}

static const char *c_sigchld_killed(void) {
    on_info(SIGCHLD, h_chld, 0);
    pid_t c = spawn();
    if (c == 0)
        idle_child();
    kill(c, SIGKILL);
    EXPECT(wait_count(&chld_n, 1, 3000), "no_SIGCHLD");
    int st;
    EXPECT(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "waitpid_%s", describe(st));
    EXPECT(chld_code[0] == CLD_KILLED, "si_code=%d_want_CLD_KILLED_2", chld_code[0]);
    EXPECT(chld_pid[0] == c, "si_pid=%d_want_%d", chld_pid[0], (int)c);
    EXPECT(chld_status[0] == SIGKILL, "si_status=%d_want_9", chld_status[0]);
    return NULL;
}

static const char *c_sigchld_stop_cont(void) {
    on_info(SIGCHLD, h_chld, 0);
    pid_t c = spawn();
    if (c == 0)
        idle_child();
    int st;
    kill(c, SIGSTOP);
    if (!wait_count(&chld_n, 1, 3000)) {
        reap(c);
        return fail("no_SIGCHLD_for_stop");
    }
    kill(c, SIGCONT);
    if (!wait_count(&chld_n, 2, 3000)) {
        reap(c);
        return fail("no_SIGCHLD_for_continue");
    }
    kill(c, SIGKILL);
    wait_count(&chld_n, 3, 3000);
    waitpid(c, &st, 0);
    EXPECT(chld_n == 3, "%d_SIGCHLDs_want_3", chld_n);
    EXPECT(chld_code[0] == CLD_STOPPED && chld_status[0] == SIGSTOP, "stop_code=%d_status=%d_want_5_19", chld_code[0],
           chld_status[0]);
    EXPECT(chld_code[1] == CLD_CONTINUED && chld_status[1] == SIGCONT, "cont_code=%d_status=%d_want_6_18", chld_code[1],
           chld_status[1]);
    EXPECT(chld_code[2] == CLD_KILLED && chld_status[2] == SIGKILL, "kill_code=%d_status=%d_want_2_9", chld_code[2],
           chld_status[2]);
    EXPECT(chld_pid[0] == c && chld_pid[1] == c && chld_pid[2] == c, "si_pid_wrong");
    return NULL;
}

static const char *c_sa_nocldstop(void) {
    on_info(SIGCHLD, h_chld, SA_NOCLDSTOP);
    pid_t c = spawn();
    if (c == 0)
        idle_child();
    int st;
    kill(c, SIGSTOP);
    pid_t r = wait_for(c, &st, WUNTRACED, 3000);
    if (r != c || !WIFSTOPPED(st)) {
        reap(c);
        return fail("not_stopped_%s", describe(st));
    }
    kill(c, SIGCONT);
    r = wait_for(c, &st, WCONTINUED, 3000);
    sleep_ms(20);
    int n = chld_n;
    kill(c, SIGKILL);
    wait_count(&chld_n, n + 1, 3000);
    waitpid(c, &st, 0);
    EXPECT(n == 0, "%d_SIGCHLDs_for_stop/continue_with_SA_NOCLDSTOP", n);
    EXPECT(chld_n == 1 && chld_code[0] == CLD_KILLED, "death_not_signalled_n=%d_code=%d", chld_n, chld_code[0]);
    return NULL;
}

static const char *autoreap(int how) {
    if (how == 0)
        signal(SIGCHLD, SIG_IGN);
    else
        on(SIGCHLD, h_count, SA_NOCLDWAIT);
    pid_t a = spawn();
    if (a == 0)
        _exit(1);
    pid_t b = spawn();
    if (b == 0)
        _exit(2);
    long long t0 = now_ns();
    int st;
    for (;;) {
        errno = 0;
        pid_t r = waitpid(-1, &st, WNOHANG);
        if (r == -1 && errno == ECHILD)
            break;
        EXPECT(r == 0 || (r == -1 && errno == EINTR), "waitpid_returned_%d_errno=%d:children_not_auto-reaped", (int)r, errno);
        EXPECT(ms_since(t0) < 3000, "children_still_there_after_3s");
        sleep_ms(2);
    }
    if (how == 1)
        EXPECT(wait_count((volatile int *)&hits, 1, 2000), "no_SIGCHLD_with_SA_NOCLDWAIT");
    return NULL;
}

static const char *c_sigchld_ign(void) { return autoreap(0); }
static const char *c_sa_nocldwait(void) { return autoreap(1); }

/* With SIGCHLD ignored a blocking wait waits for every child to end, then fails with ECHILD. */
static const char *c_sigchld_ign_wait_blocks(void) {
    signal(SIGCHLD, SIG_IGN);
    long long t0 = now_ns();
    pid_t c = spawn();
    if (c == 0) {
        sleep_ms(60);
        _exit(3);
    }
    int st;
    errno = 0;
    step("waitpid");
    pid_t r = waitpid(-1, &st, 0);
    int e = errno;
    long long ms = ms_since(t0);
    EXPECT(r == -1 && e == ECHILD, "waitpid=%d_errno=%d_want_-1_ECHILD", (int)r, e);
    EXPECT(ms >= 40, "returned_after_%lldms_before_the_child_ended", ms);
    return NULL;
}

static const char *c_kill_zombie(void) {
    mask_op(SIG_BLOCK, SIGCHLD);
    pid_t c = spawn();
    if (c == 0)
        _exit(0);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGCHLD);
    struct timespec ts = {3, 0};
    siginfo_t si;
    EXPECT(sigtimedwait(&s, &si, &ts) == SIGCHLD, "no_SIGCHLD_errno=%d", errno);
    EXPECT(kill(c, 0) == 0, "kill(zombie,0)_errno=%d_want_0", errno);
    EXPECT(kill(c, SIGTERM) == 0, "kill(zombie,SIGTERM)_errno=%d_want_0", errno);
    int st;
    EXPECT(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "reap_%s", describe(st));
    errno = 0;
    EXPECT(kill(c, 0) == -1 && errno == ESRCH, "kill(reaped,0)_errno=%d_want_ESRCH", errno);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* interrupted system calls */

static const char *c_pause_eintr(void) {
    on(SIGALRM, h_count, 0);
    arm_ms(50, 0);
    long long t0 = now_ns();
    errno = 0;
    step("pause");
    int r = pause();
    int e = errno;
    EXPECT(r == -1 && e == EINTR, "pause=%d_errno=%d", r, e);
    EXPECT(hits == 1 && got_signo == SIGALRM, "handler_hits=%d", (int)hits);
    EXPECT(ms_since(t0) >= 40, "returned_after_%lldms", ms_since(t0));
    return NULL;
}

static const char *nanosleep_eintr(int flags) {
    on(SIGALRM, h_count, flags);
    struct timespec req = {2, 0}, rem = {0, 0};
    long long t0 = now_ns();
    arm_ms(50, 0);
    errno = 0;
    step("nanosleep");
    int r = nanosleep(&req, &rem);
    int e = errno;
    long long ms = ms_since(t0);
    EXPECT(r == -1 && e == EINTR, "nanosleep=%d_errno=%d_after_%lldms", r, e, ms);
    EXPECT(hits == 1, "handler_hits=%d", (int)hits);
    long long rem_ms = rem.tv_sec * 1000LL + rem.tv_nsec / 1000000;
    EXPECT(rem.tv_nsec >= 0 && rem.tv_nsec < 1000000000L, "rem_tv_nsec=%ld_invalid", (long)rem.tv_nsec);
    EXPECT(rem_ms < 2000 && rem_ms > 1000, "rem=%lldms_want_about_1950", rem_ms);
    /* rem is 2 s minus the time slept until the interruption, which is at most the time measured here. */
    EXPECT(rem_ms + ms >= 1980 && rem_ms + ms <= 3000, "rem=%lldms+slept=%lldms_not_2s", rem_ms, ms);
    return NULL;
}

static const char *c_nanosleep_eintr(void) { return nanosleep_eintr(0); }
/* nanosleep is never restarted after a handler, SA_RESTART or not (signal(7)). */
static const char *c_nanosleep_eintr_restart(void) { return nanosleep_eintr(SA_RESTART); }

static const char *c_clock_nanosleep_eintr(void) {
    on(SIGALRM, h_count, SA_RESTART);
    struct timespec req = {2, 0}, rem = {0, 0};
    arm_ms(50, 0);
    int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem);
    EXPECT(r == EINTR, "relative_returned_%d_want_EINTR", r);
    long long rem_ms = rem.tv_sec * 1000LL + rem.tv_nsec / 1000000;
    EXPECT(rem_ms < 2000 && rem_ms > 1000, "relative_rem=%lldms", rem_ms);
    /* TIMER_ABSTIME: EINTR too, and rem is left alone. */
    struct timespec abs;
    clock_gettime(CLOCK_MONOTONIC, &abs);
    abs.tv_sec += 2;
    rem.tv_sec = 77;
    rem.tv_nsec = 77;
    arm_ms(50, 0);
    r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, &rem);
    EXPECT(r == EINTR, "absolute_returned_%d_want_EINTR", r);
    EXPECT(rem.tv_sec == 77 && rem.tv_nsec == 77, "absolute_sleep_wrote_rem");
    EXPECT(hits == 2, "handler_hits=%d", (int)hits);
    return NULL;
}

static const char *waitpid_interrupted(int flags) {
    on(SIGALRM, h_count, flags);
    pid_t c = spawn();
    if (c == 0) {
        sleep_ms(250);
        _exit(5);
    }
    arm_ms(50, 0);
    int st = 0;
    errno = 0;
    step("waitpid");
    pid_t r = waitpid(c, &st, 0);
    int e = errno;
    if (!(flags & SA_RESTART)) {
        if (r == c)
            return fail("waitpid_not_interrupted_(returned_the_child)");
        reap(c);
        EXPECT(r == -1 && e == EINTR, "waitpid=%d_errno=%d_want_EINTR", (int)r, e);
    } else {
        EXPECT(r == c, "waitpid=%d_errno=%d_want_the_child_(restarted)", (int)r, e);
        EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 5, "status_%s", describe(st));
    }
    EXPECT(hits == 1, "handler_hits=%d", (int)hits);
    return NULL;
}

static const char *c_waitpid_eintr(void) { return waitpid_interrupted(0); }
static const char *c_waitpid_restart(void) { return waitpid_interrupted(SA_RESTART); }

/* Signals that are ignored (SIG_IGN, or default-ignored SIGCHLD) do not interrupt a sleep. */
static const char *c_ignored_no_eintr(void) {
    signal(SIGUSR1, SIG_IGN);
    pid_t c = spawn();
    if (c == 0) {
        sleep_ms(30);
        signal_parent(SIGUSR1);
        signal_parent(SIGCHLD);
        _exit(0);
    }
    long long t0 = now_ns();
    struct timespec req = {0, 150000000};
    errno = 0;
    int r = nanosleep(&req, NULL);
    int e = errno;
    long long ms = ms_since(t0);
    int st;
    waitpid(c, &st, 0);
    EXPECT(r == 0, "nanosleep=%d_errno=%d_after_%lldms", r, e, ms);
    EXPECT(ms >= 140, "returned_after_%lldms", ms);
    return NULL;
}

static const char *c_sigsuspend(void) {
    on(SIGUSR1, h_count, 0);
    mask_op(SIG_BLOCK, SIGUSR1);
    pid_t c = spawn();
    if (c == 0) {
        sleep_ms(20);
        signal_parent(SIGUSR1);
        _exit(0);
    }
    sigset_t empty;
    sigemptyset(&empty);
    errno = 0;
    step("sigsuspend");
    int r = sigsuspend(&empty);
    int e = errno;
    int st;
    waitpid(c, &st, 0);
    EXPECT(r == -1 && e == EINTR, "sigsuspend=%d_errno=%d", r, e);
    EXPECT(hits == 1, "handler_hits=%d", (int)hits);
    EXPECT(blocked(SIGUSR1), "mask_not_restored_after_sigsuspend");
    return NULL;
}

static sigset_t suspend_probe;
static void h_suspend_probe(int sig) {
    (void)sig;
    sigprocmask(SIG_BLOCK, NULL, &suspend_probe);
    hits++;
}

static const char *c_sigsuspend_pending(void) {
    on(SIGUSR1, h_suspend_probe, 0);
    mask_op(SIG_BLOCK, SIGUSR1);
    mask_op(SIG_BLOCK, SIGUSR2);
    raise(SIGUSR1);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGTERM);
    long long t0 = now_ns();
    step("sigsuspend_with_signal_pending");
    int r = sigsuspend(&m);
    EXPECT(r == -1 && errno == EINTR, "sigsuspend=%d_errno=%d", r, errno);
    EXPECT(ms_since(t0) < 1000, "slow_%lldms", ms_since(t0));
    EXPECT(hits == 1, "handler_hits=%d", (int)hits);
    /* The handler runs with the sigsuspend mask plus its own signal. */
    EXPECT(sigismember(&suspend_probe, SIGTERM) && sigismember(&suspend_probe, SIGUSR1) && !sigismember(&suspend_probe, SIGUSR2),
           "mask_in_handler_wrong");
    EXPECT(blocked(SIGUSR1) && blocked(SIGUSR2) && !blocked(SIGTERM), "mask_after_wrong");
    return NULL;
}

static const char *c_sigtimedwait_pending(void) {
    on(SIGUSR2, h_count, 0);
    mask_op(SIG_BLOCK, SIGUSR2);
    kill(getpid(), SIGUSR2);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    struct timespec zero = {0, 0};
    int r = sigtimedwait(&s, &si, &zero);
    EXPECT(r == SIGUSR2, "sigtimedwait=%d_errno=%d", r, errno);
    EXPECT(si.si_signo == SIGUSR2 && si.si_code == SI_USER && si.si_pid == getpid(), "si_signo=%d_code=%d_pid=%d",
           si.si_signo, si.si_code, (int)si.si_pid);
    EXPECT(!pending(SIGUSR2), "still_pending");
    mask_op(SIG_UNBLOCK, SIGUSR2);
    EXPECT(hits == 0, "handler_ran");
    return NULL;
}

static const char *c_sigtimedwait_timeout(void) {
    on(SIGUSR2, h_count, 0);
    mask_op(SIG_BLOCK, SIGUSR2);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    siginfo_t si;
    struct timespec ts = {0, 20000000};
    long long t0 = now_ns();
    errno = 0;
    int r = sigtimedwait(&s, &si, &ts);
    int e = errno;
    long long ms = ms_since(t0);
    EXPECT(r == -1 && e == EAGAIN, "sigtimedwait=%d_errno=%d_want_EAGAIN", r, e);
    EXPECT(ms >= 15 && ms < 2000, "waited_%lldms_want_20", ms);
    struct timespec zero = {0, 0};
    errno = 0;
    r = sigtimedwait(&s, &si, &zero);
    EXPECT(r == -1 && errno == EAGAIN, "zero_timeout=%d_errno=%d", r, errno);
    EXPECT(hits == 0, "handler_ran");
    return NULL;
}

static const char *c_sigtimedwait_wakes(void) {
    mask_op(SIG_BLOCK, SIGUSR1);
    pid_t c = spawn();
    if (c == 0) {
        sleep_ms(30);
        signal_parent(SIGUSR1);
        _exit(0);
    }
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    struct timespec ts = {3, 0};
    long long t0 = now_ns();
    int r = sigtimedwait(&s, &si, &ts);
    long long ms = ms_since(t0);
    int st;
    waitpid(c, &st, 0);
    EXPECT(r == SIGUSR1, "sigtimedwait=%d_errno=%d", r, errno);
    EXPECT(si.si_pid == c && si.si_code == SI_USER, "si_pid=%d_want_%d_si_code=%d", (int)si.si_pid, (int)c, si.si_code);
    EXPECT(ms < 2000, "woke_after_%lldms", ms);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* sigaltstack */

static char *alt_mem;
static size_t alt_size;
static volatile uintptr_t alt_local;
static volatile int alt_flags_in = -1, alt_eperm = -1;
static void h_alt(int sig) {
    (void)sig;
    volatile char local = 0;
    alt_local = (uintptr_t)&local;
    stack_t cur;
    sigaltstack(NULL, &cur);
    alt_flags_in = cur.ss_flags;
    stack_t ns = {.ss_sp = alt_mem, .ss_size = alt_size, .ss_flags = 0};
    errno = 0;
    alt_eperm = sigaltstack(&ns, NULL) == -1 && errno == EPERM;
    hits++;
}

static int on_alt(uintptr_t a) {
    return a >= (uintptr_t)alt_mem && a < (uintptr_t)alt_mem + alt_size;
}

static const char *c_sigaltstack(void) {
    stack_t old;
    EXPECT(sigaltstack(NULL, &old) == 0, "query_errno=%d", errno);
    EXPECT(old.ss_flags == SS_DISABLE, "initial_flags=%d_want_SS_DISABLE", old.ss_flags);
    alt_size = 65536;
    alt_mem = mmap(NULL, alt_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(alt_mem != MAP_FAILED, "mmap_errno=%d", errno);
    stack_t ss = {.ss_sp = alt_mem, .ss_size = alt_size, .ss_flags = 0};
    EXPECT(sigaltstack(&ss, &old) == 0, "install_errno=%d", errno);
    EXPECT(old.ss_flags == SS_DISABLE, "old_flags=%d", old.ss_flags);
    EXPECT(sigaltstack(NULL, &old) == 0 && old.ss_sp == alt_mem && old.ss_size == alt_size && old.ss_flags == 0,
           "query_after_install_sp=%p_size=%zu_flags=%d", old.ss_sp, old.ss_size, old.ss_flags);
    on(SIGUSR1, h_alt, SA_ONSTACK);
    on(SIGUSR2, h_alt, 0);
    raise(SIGUSR1);
    EXPECT(hits == 1, "handler_ran_%d", (int)hits);
    EXPECT(on_alt(alt_local), "SA_ONSTACK_handler_local_%#lx_not_on_altstack", (unsigned long)alt_local);
    EXPECT(alt_flags_in == SS_ONSTACK, "flags_in_handler=%d_want_SS_ONSTACK", alt_flags_in);
    EXPECT(alt_eperm == 1, "changing_active_altstack_not_EPERM");
    EXPECT(sigaltstack(NULL, &old) == 0 && old.ss_flags == 0, "flags_after_handler=%d", old.ss_flags);
    raise(SIGUSR2);
    EXPECT(hits == 2 && !on_alt(alt_local), "handler_without_SA_ONSTACK_ran_on_altstack");
    EXPECT(alt_flags_in == 0, "flags_in_plain_handler=%d", alt_flags_in);
    ss.ss_flags = SS_DISABLE;
    EXPECT(sigaltstack(&ss, NULL) == 0, "disable_errno=%d", errno);
    EXPECT(sigaltstack(NULL, &old) == 0 && old.ss_flags == SS_DISABLE, "flags_after_disable=%d", old.ss_flags);
    raise(SIGUSR1);
    EXPECT(hits == 3 && !on_alt(alt_local), "disabled_altstack_still_used");
    return NULL;
}

static const char *c_sigaltstack_errors(void) {
    char *mem = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(mem != MAP_FAILED, "mmap_errno=%d", errno);
    stack_t ss = {.ss_sp = mem, .ss_size = 1024, .ss_flags = 0}; /* below MINSIGSTKSZ (2048) */
    errno = 0;
    EXPECT(sigaltstack(&ss, NULL) == -1 && errno == ENOMEM, "small_stack_errno=%d_want_ENOMEM", errno);
    ss.ss_size = 65536;
    ss.ss_flags = 0x7;
    errno = 0;
    EXPECT(sigaltstack(&ss, NULL) == -1 && errno == EINVAL, "bad_flags_errno=%d_want_EINVAL", errno);
    ss.ss_flags = SS_DISABLE;
    ss.ss_size = 0;
    EXPECT(sigaltstack(&ss, NULL) == 0, "SS_DISABLE_with_size_0_errno=%d", errno);
    errno = 0;
    EXPECT(syscall(SYS_sigaltstack, (void *)1, NULL) == -1 && errno == EFAULT, "bad_pointer_errno=%d_want_EFAULT", errno);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* alarm and interval timers */

static const char *c_alarm(void) {
    on(SIGALRM, h_count, 0);
    EXPECT(alarm(1) == 0, "first_alarm_not_0");
    struct itimerval it;
    EXPECT(getitimer(ITIMER_REAL, &it) == 0, "getitimer_errno=%d", errno);
    long long us = it.it_value.tv_sec * 1000000LL + it.it_value.tv_usec;
    EXPECT(us > 500000 && us <= 1000000, "getitimer_after_alarm(1)=%lldus", us);
    EXPECT(it.it_interval.tv_sec == 0 && it.it_interval.tv_usec == 0, "alarm_has_an_interval");
    unsigned left = alarm(0);
    EXPECT(left == 1, "alarm(0)_returned_%u_want_1", left);
    getitimer(ITIMER_REAL, &it);
    EXPECT(it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0, "alarm(0)_did_not_cancel");
    EXPECT(alarm(0) == 0, "second_alarm(0)_not_0");
    EXPECT(hits == 0, "SIGALRM_delivered");
    return NULL;
}

static const char *c_itimer_repeats(void) {
    on(SIGALRM, h_count, 0);
    mask_op(SIG_BLOCK, SIGALRM);
    sigset_t unblocked;
    sigprocmask(SIG_BLOCK, NULL, &unblocked);
    sigdelset(&unblocked, SIGALRM);
    struct itimerval it = {{0, 20000}, {0, 20000}}, cur;
    long long t0 = now_ns();
    EXPECT(setitimer(ITIMER_REAL, &it, NULL) == 0, "setitimer_errno=%d", errno);
    EXPECT(getitimer(ITIMER_REAL, &cur) == 0, "getitimer_errno=%d", errno);
    EXPECT(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_usec == 20000, "interval_read_back=%ld.%06ld",
           (long)cur.it_interval.tv_sec, (long)cur.it_interval.tv_usec);
    EXPECT(cur.it_value.tv_sec == 0 && cur.it_value.tv_usec > 0 && cur.it_value.tv_usec <= 20000, "value_read_back=%ld.%06ld",
           (long)cur.it_value.tv_sec, (long)cur.it_value.tv_usec);
    step("sigsuspend_loop");
    while (hits < 3)
        sigsuspend(&unblocked);
    long long ms = ms_since(t0);
    getitimer(ITIMER_REAL, &cur);
    EXPECT(cur.it_value.tv_sec == 0 && cur.it_value.tv_usec > 0 && cur.it_value.tv_usec <= 20000,
           "value_while_running=%ld.%06ld", (long)cur.it_value.tv_sec, (long)cur.it_value.tv_usec);
    disarm();
    EXPECT(ms >= 50, "3_signals_after_%lldms_want_>=60", ms);
    EXPECT(ms < 1000, "3_signals_took_%lldms", ms);
    return NULL;
}

static const char *c_itimer_stop(void) {
    on(SIGALRM, h_count, 0);
    struct itimerval it = {{0, 20000}, {0, 20000}}, zero, old, cur;
    memset(&zero, 0, sizeof zero);
    setitimer(ITIMER_REAL, &it, NULL);
    EXPECT(wait_count((volatile int *)&hits, 2, 2000), "timer_did_not_fire_twice");
    EXPECT(setitimer(ITIMER_REAL, &zero, &old) == 0, "stop_errno=%d", errno);
    EXPECT(old.it_interval.tv_usec == 20000 && old.it_value.tv_usec > 0 && old.it_value.tv_usec <= 20000,
           "old_value=%ld.%06ld_interval=%ld.%06ld", (long)old.it_value.tv_sec, (long)old.it_value.tv_usec,
           (long)old.it_interval.tv_sec, (long)old.it_interval.tv_usec);
    int n = hits;
    sleep_ms(80);
    EXPECT(hits == n, "%d_more_SIGALRMs_after_stop", (int)hits - n);
    getitimer(ITIMER_REAL, &cur);
    EXPECT(cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0 && cur.it_interval.tv_usec == 0, "not_zero_after_stop");
    /* A one-shot timer reads zero once it has fired. */
    struct itimerval once = {{0, 0}, {0, 10000}};
    setitimer(ITIMER_REAL, &once, NULL);
    EXPECT(wait_count((volatile int *)&hits, n + 1, 2000), "one_shot_did_not_fire");
    getitimer(ITIMER_REAL, &cur);
    EXPECT(cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0, "one_shot_not_zero_after_firing");
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* fork */

static void h_usr2(int sig) { (void)sig; }

/* A child inherits the handlers, the mask and the alternate stack, but not pending signals or timers. */
static const char *c_fork_inherits(void) {
    on(SIGUSR2, h_usr2, SA_RESTART);
    mask_op(SIG_BLOCK, SIGUSR1);
    raise(SIGUSR1);
    EXPECT(pending(SIGUSR1), "not_pending_before_fork");
    char *mem = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    stack_t ss = {.ss_sp = mem, .ss_size = 65536, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    arm_ms(800, 0);
    pid_t c = spawn();
    if (c == 0) {
        int bad = 0;
        struct sigaction sa;
        sigaction(SIGUSR2, NULL, &sa);
        if (sa.sa_handler != h_usr2 || !(sa.sa_flags & SA_RESTART))
            bad |= 1;
        if (!blocked(SIGUSR1))
            bad |= 2;
        if (pending(SIGUSR1))
            bad |= 4;
        struct itimerval it;
        getitimer(ITIMER_REAL, &it);
        if (it.it_value.tv_sec || it.it_value.tv_usec)
            bad |= 8;
        stack_t cur;
        sigaltstack(NULL, &cur);
        if (cur.ss_sp != mem || cur.ss_size != 65536 || cur.ss_flags != 0)
            bad |= 16;
        _exit(bad);
    }
    const char *why = expect_end(c, 0, 0);
    disarm();
    EXPECT(!why, "%s_(1:handler,2:mask,4:pending_inherited,8:itimer_inherited,16:altstack)", why);
    EXPECT(pending(SIGUSR1), "parent_lost_its_pending_signal");
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* process groups and sessions */

static const char *c_pgrp_kill(void) {
    pid_t c = spawn();
    if (c == 0) {
        setpgid(0, 0);
        idle_child();
    }
    setpgid(c, c); /* both sides, as shells do; one of them wins the race, both mean the same */
    long long t0 = now_ns();
    while (getpgid(c) != c && ms_since(t0) < 2000)
        sleep_ms(1);
    pid_t g = getpgid(c);
    if (g != c) {
        reap(c);
        return fail("getpgid(child)=%d_want_%d", (int)g, (int)c);
    }
    EXPECT(getpgrp() == getpgid(0) && getpgid(0) == getpid(), "own_pgrp=%d_getpgid(0)=%d_pid=%d", (int)getpgrp(),
           (int)getpgid(0), (int)getpid());
    EXPECT(kill(-c, SIGTERM) == 0, "kill(-pgrp)_errno=%d", errno);
    return expect_end(c, SIGTERM, 0);
}

static const char *c_setsid(void) {
    pid_t c = spawn();
    if (c == 0) {
        pid_t me = getpid();
        pid_t s = setsid();
        int bad = 0;
        if (s != me)
            bad |= 1;
        if (getsid(0) != me)
            bad |= 2;
        if (getpgrp() != me)
            bad |= 4;
        errno = 0;
        if (setsid() != -1 || errno != EPERM) /* now a group leader */
            bad |= 8;
        _exit(bad);
    }
    const char *why = expect_end(c, 0, 0);
    EXPECT(!why, "%s_(1:setsid_result,2:getsid,4:pgrp,8:second_setsid_not_EPERM)", why);
    return NULL;
}

static const char *c_setsid_leader(void) {
    EXPECT(getpgrp() == getpid(), "check_process_is_not_a_group_leader");
    errno = 0;
    pid_t r = setsid();
    EXPECT(r == -1 && errno == EPERM, "setsid=%d_errno=%d_want_EPERM", (int)r, errno);
    return NULL;
}

static const char *c_kill_zero_group(void) {
    EXPECT(getpgrp() == getpid(), "not_a_group_leader:refusing_kill(0)");
    pid_t c = spawn();
    if (c == 0)
        idle_child();
    on(SIGUSR1, h_count, 0);
    EXPECT(kill(0, SIGUSR1) == 0, "kill(0)_errno=%d", errno);
    EXPECT(hits == 1, "sender_not_signalled_hits=%d", (int)hits);
    return expect_end(c, SIGUSR1, 0);
}

/* ------------------------------------------------------------------------------------------------------------- */
/* errors */

/* Linux reads int and pid_t arguments from the low 32 bits of their registers only: glibc passes them as it got
 * them (waitpid(-1, ..) arrives as rdi = 0xffffffff), and whatever is in the upper half is ignored. */
#define HI(x) ((long)((0xdead0000ULL << 32) | (uint32_t)(x)))
static const char *c_int_args_32bit(void) {
    on(SIGUSR1, h_count, 0);
    EXPECT(syscall(SYS_kill, HI(getpid()), HI(SIGUSR1)) == 0, "kill_errno=%d", errno);
    EXPECT(hits == 1, "kill_delivered_%d", (int)hits);
    EXPECT(syscall(SYS_tgkill, HI(getpid()), HI(my_tid()), HI(SIGUSR1)) == 0, "tgkill_errno=%d", errno);
    EXPECT(syscall(SYS_tkill, HI(my_tid()), HI(SIGUSR1)) == 0, "tkill_errno=%d", errno);
    EXPECT(hits == 3, "tgkill_tkill_delivered_%d", (int)hits - 1);
    EXPECT(getpgrp() == getpid(), "check_process_is_not_a_group_leader");
    EXPECT(syscall(SYS_kill, (long)(uint32_t)-getpgrp(), 0) == 0, "kill(-pgrp)_zero-extended_errno=%d", errno);
    EXPECT(syscall(SYS_getpgid, HI(getpid())) == getpgrp(), "getpgid_errno=%d", errno);
    struct ksigaction k, ko;
    memset(&k, 0, sizeof k);
    k.handler = SIG_IGN;
    EXPECT(syscall(SYS_rt_sigaction, HI(SIGUSR2), &k, NULL, 8) == 0, "rt_sigaction_errno=%d", errno);
    EXPECT(syscall(SYS_rt_sigaction, SIGUSR2, NULL, &ko, 8) == 0 && ko.handler == SIG_IGN, "rt_sigaction_did_not_install");
    uint64_t m = 1ULL << (SIGUSR2 - 1);
    EXPECT(syscall(SYS_rt_sigprocmask, HI(SIG_BLOCK), &m, NULL, 8) == 0, "rt_sigprocmask_errno=%d", errno);
    EXPECT(blocked(SIGUSR2), "rt_sigprocmask_did_not_block");
    pid_t c = spawn();
    if (c == 0)
        _exit(9);
    int st = 0;
    long r = syscall(SYS_wait4, (long)(uint32_t)-1, &st, HI(0), NULL);
    EXPECT(r == c && WIFEXITED(st) && WEXITSTATUS(st) == 9, "wait4(0xffffffff)=%ld_errno=%d_want_%d", r, errno, (int)c);
    return NULL;
}

static const char *c_err_kill(void) {
    errno = 0;
    EXPECT(kill(NO_SUCH_PID, 0) == -1 && errno == ESRCH, "no_such_pid_errno=%d_want_ESRCH", errno);
    errno = 0;
    EXPECT(kill(NO_SUCH_PID, SIGTERM) == -1 && errno == ESRCH, "no_such_pid_SIGTERM_errno=%d", errno);
    errno = 0;
    EXPECT(kill(-NO_SUCH_PID, 0) == -1 && errno == ESRCH, "no_such_pgrp_errno=%d_want_ESRCH", errno);
    errno = 0;
    EXPECT(kill(getpid(), 65) == -1 && errno == EINVAL, "signal_65_errno=%d_want_EINVAL", errno);
    errno = 0;
    EXPECT(kill(getpid(), -1) == -1 && errno == EINVAL, "signal_-1_errno=%d_want_EINVAL", errno);
    EXPECT(kill(getpid(), 0) == 0, "kill(self,0)_errno=%d", errno);
    EXPECT(kill(getppid(), 0) == 0, "kill(parent,0)_errno=%d", errno);
    return NULL;
}

static const char *c_err_sigaction(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h_count;
    sigemptyset(&sa.sa_mask);
    errno = 0;
    EXPECT(sigaction(SIGKILL, &sa, NULL) == -1 && errno == EINVAL, "SIGKILL_errno=%d", errno);
    errno = 0;
    EXPECT(sigaction(SIGSTOP, &sa, NULL) == -1 && errno == EINVAL, "SIGSTOP_errno=%d", errno);
    sa.sa_handler = SIG_IGN;
    errno = 0;
    EXPECT(sigaction(SIGKILL, &sa, NULL) == -1 && errno == EINVAL, "SIGKILL_SIG_IGN_errno=%d", errno);
    sa.sa_handler = SIG_DFL;
    errno = 0;
    EXPECT(sigaction(SIGSTOP, &sa, NULL) == -1 && errno == EINVAL, "SIGSTOP_SIG_DFL_errno=%d", errno);
    EXPECT(sigaction(SIGKILL, NULL, &old) == 0 && old.sa_handler == SIG_DFL, "query_SIGKILL_errno=%d", errno);
    errno = 0;
    EXPECT(sigaction(0, &sa, NULL) == -1 && errno == EINVAL, "signal_0_errno=%d", errno);
    errno = 0;
    EXPECT(sigaction(65, &sa, NULL) == -1 && errno == EINVAL, "signal_65_errno=%d", errno);
    return NULL;
}

static const char *c_err_raw_sigaction(void) {
    struct ksigaction k, ko;
    memset(&k, 0, sizeof k);
    k.handler = SIG_IGN;
    errno = 0;
    EXPECT(syscall(SYS_rt_sigaction, 0, &k, NULL, 8) == -1 && errno == EINVAL, "signal_0_errno=%d", errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigaction, 65, &k, NULL, 8) == -1 && errno == EINVAL, "signal_65_errno=%d", errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigaction, SIGKILL, &k, NULL, 8) == -1 && errno == EINVAL, "SIGKILL_errno=%d", errno);
    EXPECT(syscall(SYS_rt_sigaction, SIGKILL, NULL, &ko, 8) == 0, "query_SIGKILL_errno=%d", errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigaction, SIGUSR1, (void *)1, NULL, 8) == -1 && errno == EFAULT, "bad_act_errno=%d_want_EFAULT", errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigaction, SIGUSR1, NULL, (void *)1, 8) == -1 && errno == EFAULT, "bad_oldact_errno=%d_want_EFAULT",
           errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigaction, SIGUSR1, &k, NULL, 4) == -1 && errno == EINVAL, "sigsetsize_4_errno=%d_want_EINVAL", errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigaction, SIGUSR1, &k, NULL, 16) == -1 && errno == EINVAL, "sigsetsize_16_errno=%d_want_EINVAL",
           errno);
    /* The raw call reads back exactly what was installed. */
    k.handler = (void *)h_count;
    k.flags = SA_RESTART;
    k.restorer = NULL;
    k.mask = 1ULL << (SIGUSR2 - 1);
    EXPECT(syscall(SYS_rt_sigaction, SIGUSR1, &k, NULL, 8) == 0, "install_errno=%d", errno);
    memset(&ko, 0, sizeof ko);
    EXPECT(syscall(SYS_rt_sigaction, SIGUSR1, NULL, &ko, 8) == 0, "query_errno=%d", errno);
    EXPECT(ko.handler == (void *)h_count && ko.flags == SA_RESTART && ko.mask == k.mask, "read_back_handler=%p_flags=%#lx_mask=%#llx",
           ko.handler, ko.flags, (unsigned long long)ko.mask);
    return NULL;
}

static const char *c_err_sigprocmask(void) {
    sigset_t s, old;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    errno = 0;
    EXPECT(sigprocmask(99, &s, NULL) == -1 && errno == EINVAL, "how_99_errno=%d", errno);
    EXPECT(!blocked(SIGUSR1), "failed_call_changed_the_mask");
    uint64_t m = 1ULL << (SIGUSR1 - 1), o = 0;
    errno = 0;
    EXPECT(syscall(SYS_rt_sigprocmask, 99, &m, NULL, 8) == -1 && errno == EINVAL, "raw_how_99_errno=%d", errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigprocmask, SIG_BLOCK, &m, NULL, 4) == -1 && errno == EINVAL, "sigsetsize_4_errno=%d_want_EINVAL",
           errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigprocmask, SIG_BLOCK, (void *)1, NULL, 8) == -1 && errno == EFAULT, "bad_set_errno=%d_want_EFAULT",
           errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, (void *)1, 8) == -1 && errno == EFAULT, "bad_oldset_errno=%d_want_EFAULT",
           errno);
    /* Linux checks `how` only when a new set is given. */
    EXPECT(syscall(SYS_rt_sigprocmask, 99, NULL, &o, 8) == 0, "how_99_without_set_errno=%d_want_success", errno);
    EXPECT(!blocked(SIGUSR1), "mask_changed");
    (void)old;
    return NULL;
}

static const char *c_err_tgkill(void) {
    errno = 0;
    EXPECT(syscall(SYS_tgkill, getpid(), NO_SUCH_PID, 0) == -1 && errno == ESRCH, "no_such_tid_errno=%d_want_ESRCH", errno);
    errno = 0;
    EXPECT(syscall(SYS_tgkill, getppid(), my_tid(), 0) == -1 && errno == ESRCH, "tid_not_in_tgid_errno=%d_want_ESRCH", errno);
    errno = 0;
    EXPECT(syscall(SYS_tgkill, 0, my_tid(), 0) == -1 && errno == EINVAL, "tgid_0_errno=%d_want_EINVAL", errno);
    errno = 0;
    EXPECT(syscall(SYS_tgkill, getpid(), 0, 0) == -1 && errno == EINVAL, "tid_0_errno=%d_want_EINVAL", errno);
    errno = 0;
    EXPECT(syscall(SYS_tgkill, getpid(), my_tid(), 65) == -1 && errno == EINVAL, "signal_65_errno=%d_want_EINVAL", errno);
    EXPECT(syscall(SYS_tgkill, getpid(), my_tid(), 0) == 0, "tgkill_self_0_errno=%d", errno);
    errno = 0;
    EXPECT(syscall(SYS_tkill, NO_SUCH_PID, 0) == -1 && errno == ESRCH, "tkill_no_such_tid_errno=%d_want_ESRCH", errno);
    errno = 0;
    EXPECT(syscall(SYS_tkill, 0, 0) == -1 && errno == EINVAL, "tkill_tid_0_errno=%d_want_EINVAL", errno);
    errno = 0;
    EXPECT(syscall(SYS_tkill, -1, 0) == -1 && errno == EINVAL, "tkill_tid_-1_errno=%d_want_EINVAL", errno);
    EXPECT(syscall(SYS_tkill, my_tid(), 0) == 0, "tkill_self_0_errno=%d", errno);
    return NULL;
}

static const char *c_err_wait_calls(void) {
    uint64_t m = 1ULL << (SIGUSR1 - 1);
    struct timespec bad = {0, 1000000000L};
    siginfo_t si;
    errno = 0;
    EXPECT(syscall(SYS_rt_sigtimedwait, &m, &si, &bad, 8) == -1 && errno == EINVAL, "sigtimedwait_bad_timeout_errno=%d", errno);
    struct timespec neg = {-1, 0};
    errno = 0;
    EXPECT(syscall(SYS_rt_sigtimedwait, &m, &si, &neg, 8) == -1 && errno == EINVAL, "sigtimedwait_negative_errno=%d", errno);
    struct timespec zero = {0, 0};
    errno = 0;
    EXPECT(syscall(SYS_rt_sigtimedwait, &m, &si, &zero, 4) == -1 && errno == EINVAL, "sigtimedwait_sigsetsize_4_errno=%d", errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigsuspend, &m, 4) == -1 && errno == EINVAL, "sigsuspend_sigsetsize_4_errno=%d", errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigsuspend, (void *)1, 8) == -1 && errno == EFAULT, "sigsuspend_bad_set_errno=%d", errno);
    uint64_t p[2];
    errno = 0;
    EXPECT(syscall(SYS_rt_sigpending, p, 16) == -1 && errno == EINVAL, "sigpending_sigsetsize_16_errno=%d", errno);
    errno = 0;
    EXPECT(syscall(SYS_rt_sigpending, (void *)1, 8) == -1 && errno == EFAULT, "sigpending_bad_set_errno=%d", errno);
    return NULL;
}

static const char *c_err_setitimer(void) {
    struct itimerval it = {{0, 0}, {0, 1000000}}, cur;
    errno = 0;
    EXPECT(setitimer(ITIMER_REAL, &it, NULL) == -1 && errno == EINVAL, "usec_1000000_errno=%d_want_EINVAL", errno);
    it.it_value.tv_usec = -1;
    errno = 0;
    EXPECT(setitimer(ITIMER_REAL, &it, NULL) == -1 && errno == EINVAL, "usec_-1_errno=%d_want_EINVAL", errno);
    it.it_value.tv_usec = 1000;
    errno = 0;
    EXPECT(setitimer(99, &it, NULL) == -1 && errno == EINVAL, "which_99_errno=%d_want_EINVAL", errno);
    errno = 0;
    EXPECT(getitimer(99, &cur) == -1 && errno == EINVAL, "getitimer_which_99_errno=%d_want_EINVAL", errno);
    errno = 0;
    EXPECT(syscall(SYS_getitimer, ITIMER_REAL, (void *)1) == -1 && errno == EFAULT, "getitimer_bad_pointer_errno=%d", errno);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* the list */

static const struct check checks[] = {
    {"sigaction_query", c_sigaction_query},
    {"siginfo_kill_si_user", c_siginfo_kill},
    {"handler_runs_before_kill_returns", c_handler_before_kill_returns},
    {"siginfo_raise_si_tkill", c_siginfo_raise},
    {"siginfo_tgkill_tkill", c_siginfo_tgkill_tkill},
    {"blocked_stays_pending_delivered_once", c_blocked_pending_once},
    {"standard_signals_coalesce", c_standard_coalesce},
    {"process_and_thread_pending_sets", c_process_and_thread_pending},
    {"rt_signals_queue_in_order", c_rt_queue},
    {"sigkill_sigstop_unblockable", c_unblockable},
    {"sigprocmask_how", c_sigprocmask_how},
    {"handler_mask_and_restore", c_handler_mask},
    {"sa_nodefer_nests", c_nodefer},
    {"same_signal_deferred_in_handler", c_deferred},
    {"sa_resethand", c_resethand},
    {"blocked_ignored_stays_pending", c_blocked_ignored_pending},
    {"sig_ign_discards_pending", c_ign_discards_pending},
    {"pending_delivered_lowest_first", c_pending_order},
    {"pending_frames_nested", c_pending_nested},
    {"sigreturn_applies_uc_sigmask", c_sigreturn_ucmask},
    {"fp_sum_across_raise", c_fp_sum},
    {"async_gprs_restored", c_regs_gprs},
    {"async_xmm_restored", c_regs_xmm},
    {"async_mxcsr_x87cw_restored", c_regs_fpctl},
    {"async_df_cleared_and_restored", c_regs_df},
    {"red_zone_preserved", c_regs_redzone},
    {"handler_fresh_fpu_state", c_regs_fresh_fpu},
    {"ucontext_gregs_view", c_regs_uc_gregs},
    {"ucontext_fpregs_view", c_regs_uc_fpregs},
    {"handler_stack_aligned", c_stack_aligned},
    {"sigill_ud2_skip", c_sigill_ud2},
    {"sigreturn_applies_context", c_sigreturn_applies_context},
    {"sigsegv_accerr_retry", c_segv_accerr},
    {"sigsegv_maperr", c_segv_maperr},
    {"mcontext_trapno_err", c_mcontext_trapno},
    {"sigfpe_intdiv", c_sigfpe_intdiv},
    {"sigfpe_intdiv_overflow", c_sigfpe_overflow},
    {"sigtrap_int3", c_sigtrap_int3},
    {"default_sigterm_kills", c_default_term},
    {"default_sigusr1_kills", c_default_usr1},
    {"default_null_write_sigsegv", c_default_segv},
    {"default_ignored_survive", c_default_ignored},
    {"sig_ign_sigterm_survives", c_ign_term},
    {"abort_kills_despite_handler", c_abort},
    {"sigkill_kills_all_blocked", c_sigkill_all_blocked},
    {"fault_blocked_kills", c_fault_blocked},
    {"fault_ignored_kills", c_fault_ignored},
    {"fault_in_own_handler_kills", c_fault_in_handler},
    {"sigill_blocked_with_handler_kills", c_ill_blocked},
    {"handler_returns_to_garbage", c_return_to_garbage},
    {"stop_continue_kill_wait", c_stop_continue},
    {"stopped_sigterm_waits_for_sigcont", c_stopped_term_waits},
    {"sigcont_handler_runs", c_sigcont_handler},
    {"nanosleep_resumes_after_stop", c_nanosleep_after_stop},
    {"sigchld_exited_info", c_sigchld_exited},
    {"sigchld_killed_info", c_sigchld_killed},
    {"sigchld_stop_cont_codes", c_sigchld_stop_cont},
    {"sa_nocldstop", c_sa_nocldstop},
    {"sigchld_ign_autoreap", c_sigchld_ign},
    {"sigchld_ign_wait_blocks_then_echild", c_sigchld_ign_wait_blocks},
    {"sa_nocldwait_autoreap", c_sa_nocldwait},
    {"kill_zombie_then_reaped", c_kill_zombie},
    {"pause_eintr", c_pause_eintr},
    {"nanosleep_eintr_rem", c_nanosleep_eintr},
    {"nanosleep_eintr_despite_sa_restart", c_nanosleep_eintr_restart},
    {"clock_nanosleep_eintr", c_clock_nanosleep_eintr},
    {"waitpid_eintr_without_sa_restart", c_waitpid_eintr},
    {"waitpid_restarts_with_sa_restart", c_waitpid_restart},
    {"ignored_signals_do_not_interrupt", c_ignored_no_eintr},
    {"sigsuspend_eintr_mask", c_sigsuspend},
    {"sigsuspend_pending_returns_at_once", c_sigsuspend_pending},
    {"sigtimedwait_takes_pending", c_sigtimedwait_pending},
    {"sigtimedwait_timeout_eagain", c_sigtimedwait_timeout},
    {"sigtimedwait_wakes_on_kill", c_sigtimedwait_wakes},
    {"sigaltstack_onstack", c_sigaltstack},
    {"sigaltstack_errors", c_sigaltstack_errors},
    {"alarm_remaining", c_alarm},
    {"itimer_interval_repeats", c_itimer_repeats},
    {"itimer_stop", c_itimer_stop},
    {"fork_inherits_and_clears", c_fork_inherits},
    {"pgrp_kill_group", c_pgrp_kill},
    {"setsid_new_session", c_setsid},
    {"setsid_leader_eperm", c_setsid_leader},
    {"kill_zero_own_group", c_kill_zero_group},
    {"int_args_use_low_32_bits", c_int_args_32bit},
    {"err_kill", c_err_kill},
    {"err_sigaction", c_err_sigaction},
    {"err_raw_rt_sigaction", c_err_raw_sigaction},
    {"err_sigprocmask", c_err_sigprocmask},
    {"err_tgkill_tkill", c_err_tgkill},
    {"err_sigtimedwait_sigsuspend_sigpending", c_err_wait_calls},
    {"err_setitimer", c_err_setitimer},
};

int main(int argc, char **argv) {
    return suite_main(argc, argv, checks, sizeof checks / sizeof checks[0]);
}
