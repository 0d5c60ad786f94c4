/* POSIX/Linux threads and futex conformance suite for questv (tests/conformance.rs).
 *
 * One static binary, built unmodified with `musl-gcc -static -O2` and `gcc -static -O2` (glibc; no -pthread: since
 * glibc 2.34, as in musl, the pthread functions are in libc), that runs the same way on Linux and on questv. Every
 * check runs in its own forked child (its own process group), so a crash, a hang or a stray signal in one check never
 * stops the suite; the parent prints one line per check
 *
 *     RESULT thrcheck name=<name> ok=1
 *     RESULT thrcheck name=<name> ok=0 why=<detail-without-spaces>
 *
 * and at the end `RESULT conformance suite=threads libc=<musl|glibc> passed=P failed=F`, exiting with F (capped at
 * 255). `threads NAME...` runs only the checks whose names contain one of the NAMEs. A check process that hangs is
 * ended by its own alarm() (it kills the children it forked and reports where it was), the parent's bounded wait
 * being the last resort. The harness, shared with signals.c and process.c, is suite.h.
 *
 * System calls used (beyond those of the signals suite): clone with CLONE_THREAD, CLONE_SETTLS, CLONE_PARENT_SETTID
 * and CLONE_CHILD_CLEARTID (glibc tries clone3 first, falling back on ENOSYS), futex (WAIT, WAKE, REQUEUE,
 * CMP_REQUEUE, WAIT_BITSET, WAKE_BITSET, private and not), set_tid_address, gettid, tgkill, tkill, exit (one thread)
 * and exit_group, rt_sigprocmask per thread, mmap/munmap/mprotect for thread stacks, sched_yield; glibc's thread
 * code adds set_robust_list, rseq and madvise(MADV_DONTNEED). No files, pipes, /proc, robust-mutex owner death,
 * futexes shared between processes, CPU affinity or exec.
 *
 * Every check is deterministic: where a check must know that a thread is asleep in the kernel, it does not sleep
 * and hope; it loops on an operation whose result proves it (FUTEX_WAKE returning 1, a mutex only obtainable once
 * the waiter has released it inside pthread_cond_wait, ...). Short sleeps appear only where a wrong kernel could
 * otherwise pass by luck, never where a right one could fail. The expectations are Linux's behaviour (the harness's
 * reference is Linux 6.1; all checks also pass on 6.18), commented where not obvious. All threads of a process may
 * run on one CPU. */
#define SUITE_NAME "threads"
#define SUITE_CHECK "thrcheck"
/* A check process ends itself (on_check_timeout, suite.h) after this long; the parent waits a little longer. */
#define CHECK_ALARM_S 9
#define PARENT_WAIT_MS 12000
#include "suite.h"

#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/time.h>

/* The futex ABI (<linux/futex.h>, which musl-gcc does not provide). */
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define FUTEX_REQUEUE 3
#define FUTEX_CMP_REQUEUE 4
#define FUTEX_WAIT_BITSET 9
#define FUTEX_WAKE_BITSET 10
#define FUTEX_PRIVATE_FLAG 128
#define FUTEX_CLOCK_REALTIME 256
#define FUTEX_WAIT_PRIVATE (FUTEX_WAIT | FUTEX_PRIVATE_FLAG)
#define FUTEX_WAKE_PRIVATE (FUTEX_WAKE | FUTEX_PRIVATE_FLAG)
#define FUTEX_REQUEUE_PRIVATE (FUTEX_REQUEUE | FUTEX_PRIVATE_FLAG)
#define FUTEX_CMP_REQUEUE_PRIVATE (FUTEX_CMP_REQUEUE | FUTEX_PRIVATE_FLAG)
#define FUTEX_WAIT_BITSET_PRIVATE (FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG)
#define FUTEX_WAKE_BITSET_PRIVATE (FUTEX_WAKE_BITSET | FUTEX_PRIVATE_FLAG)
#define FUTEX_BITSET_MATCH_ANY (-1)

/* ------------------------------------------------------------------------------------------------------------- */
/* helpers of this suite (the harness is suite.h) */

/* pthread_* return an error number (they do not set errno). */
#define PT(call)                                                                                                     \
    do {                                                                                                             \
        int pt_rc_ = (call);                                                                                         \
        if (pt_rc_ != 0)                                                                                             \
            return fail("%s_returned_%d", #call, pt_rc_);                                                           \
    } while (0)

/* A deadline `ms` from now on clock `c`; one in the past is clamped to the clock's epoch (0), which is still past:
 * shortly after boot MONOTONIC may read less than a second, and a negative timespec is EINVAL, not ETIMEDOUT. */
static struct timespec abs_in(clockid_t c, long ms) {
    long long t = clock_ns(c) + ms * 1000000LL;
    if (t < 0)
        t = 0;
    struct timespec ts = {(time_t)(t / 1000000000LL), (long)(t % 1000000000LL)};
    return ts;
}

static int tg_kill(pid_t tgid, pid_t tid, int sig) {
    return (int)syscall(SYS_tgkill, tgid, tid, sig);
}

static long futex(volatile int *uaddr, int op, int val, const struct timespec *ts, volatile int *uaddr2, int val3) {
    return syscall(SYS_futex, uaddr, op, val, ts, uaddr2, val3);
}

/* FUTEX_REQUEUE and FUTEX_CMP_REQUEUE take their requeue count in the timeout argument's place. */
static long futex_requeue(volatile int *uaddr, int op, int nwake, long nrequeue, volatile int *uaddr2, int val3) {
    return syscall(SYS_futex, uaddr, op, nwake, nrequeue, uaddr2, val3);
}

static int add(volatile int *p, int v) {
    return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST);
}

/* Poll until thread `tid` of this process is gone (tgkill signal 0 says ESRCH): a thread that ended is released
 * by the kernel at once (threads are never zombies for the caller), so this only waits for it to get there. */
static int wait_thread_gone(pid_t tid, int ms) {
    long long end = now_ns() + ms * 1000000LL;
    while (!(tg_kill(getpid(), tid, 0) == -1 && errno == ESRCH)) {
        if (now_ns() > end)
            return 0;
        sleep_ms(1);
    }
    return 1;
}

/* sem_wait, retried when a signal handler interrupted it (glibc and musl return EINTR then). */
static int sem_wait_all(sem_t *s) {
    int r;
    while ((r = sem_wait(s)) == -1 && errno == EINTR) {
    }
    return r;
}

static int thread_mask(int how, int sig) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    return pthread_sigmask(how, &s, NULL);
}

static int thread_blocks(int sig) {
    sigset_t s;
    pthread_sigmask(SIG_BLOCK, NULL, &s);
    return sigismember(&s, sig);
}

static int thread_pending(int sig) {
    sigset_t s;
    sigpending(&s);
    return sigismember(&s, sig);
}

/* ------------------------------------------------------------------------------------------------------------- */
/* creation, joining, identity */

static void *t_double(void *arg) {
    return (void *)((intptr_t)arg * 2);
}

static void *t_pthread_exit(void *arg) {
    pthread_exit((void *)((intptr_t)arg + 100));
    return NULL;
}

static const char *c_create_join(void) {
    pthread_t a, b;
    void *ra = NULL, *rb = NULL;
    PT(pthread_create(&a, NULL, t_double, (void *)21));
    PT(pthread_create(&b, NULL, t_pthread_exit, (void *)5));
    PT(pthread_join(a, &ra));
    PT(pthread_join(b, &rb));
    EXPECT(ra == (void *)42, "return_value=%p_want_0x2a", ra);
    EXPECT(rb == (void *)105, "pthread_exit_value=%p_want_0x69", rb);
    /* Joined in the other order, and with a NULL result pointer. */
    PT(pthread_create(&a, NULL, t_double, (void *)1));
    PT(pthread_create(&b, NULL, t_double, (void *)2));
    PT(pthread_join(b, &rb));
    PT(pthread_join(a, NULL));
    EXPECT(rb == (void *)4, "second_return_value=%p", rb);
    return NULL;
}

static pthread_t id_main;
static volatile pid_t id_tid, id_pid, id_ppid;
static volatile int id_eq_self = -1, id_eq_main = -1;
static pthread_t id_self;
static sem_t id_ready, id_go;

static void *t_ident(void *arg) {
    (void)arg;
    id_tid = my_tid();
    id_pid = getpid();
    id_ppid = getppid();
    id_self = pthread_self();
    id_eq_self = pthread_equal(id_self, pthread_self()) != 0;
    id_eq_main = pthread_equal(pthread_self(), id_main) != 0;
    sem_post(&id_ready);
    sem_wait_all(&id_go);
    return NULL;
}

static const char *c_identity(void) {
    id_main = pthread_self();
    pid_t pid = getpid();
    /* The main thread's tid is the process id (the thread-group leader). */
    EXPECT(my_tid() == pid, "main_gettid=%d_getpid=%d", (int)my_tid(), (int)pid);
    sem_init(&id_ready, 0, 0);
    sem_init(&id_go, 0, 0);
    pthread_t t;
    PT(pthread_create(&t, NULL, t_ident, NULL));
    sem_wait_all(&id_ready);
    EXPECT(id_pid == pid, "thread_getpid=%d_want_%d", (int)id_pid, (int)pid);
    EXPECT(id_ppid == getppid(), "thread_getppid=%d_want_%d", (int)id_ppid, (int)getppid());
    EXPECT(id_tid > 0 && id_tid != pid, "thread_gettid=%d_pid=%d", (int)id_tid, (int)pid);
    EXPECT(pthread_equal(id_self, t), "pthread_self_in_thread_differs_from_pthread_create_id");
    EXPECT(!pthread_equal(id_self, id_main), "thread_pthread_self_equals_main");
    EXPECT(id_eq_self == 1 && id_eq_main == 0, "pthread_equal_in_thread_self=%d_main=%d", id_eq_self, id_eq_main);
    /* The thread exists as tid id_tid of this thread group only: tgkill checks the group too. */
    EXPECT(tg_kill(pid, id_tid, 0) == 0, "tgkill_0_live_thread_errno=%d", errno);
    errno = 0;
    EXPECT(tg_kill(NO_SUCH_PID, id_tid, 0) == -1 && errno == ESRCH, "tgkill_wrong_tgid_errno=%d_want_ESRCH", errno);
    sem_post(&id_go);
    PT(pthread_join(t, NULL));
    EXPECT(wait_thread_gone(id_tid, 3000), "joined_thread_still_signalable");
    EXPECT(my_tid() == pid, "main_gettid_changed");
    return NULL;
}

/* 64 threads, 16 at a time; the threads of a batch all live at once (a barrier), so their tids must differ. */
#define BATCH 16
static pthread_barrier_t many_barrier;
static volatile pid_t many_tid[64];
static volatile int many_barrier_bad;

static void *t_many(void *arg) {
    intptr_t i = (intptr_t)arg;
    many_tid[i] = my_tid();
    int r = pthread_barrier_wait(&many_barrier);
    if (r != 0 && r != PTHREAD_BARRIER_SERIAL_THREAD)
        many_barrier_bad = r;
    return (void *)(i + 1000);
}

static const char *c_create_64(void) {
    /* A modest stack each: glibc's default is RLIMIT_STACK (8 MiB), which is a lot of address space for 16. */
    pthread_attr_t attr;
    PT(pthread_attr_init(&attr));
    PT(pthread_attr_setstacksize(&attr, 256 * 1024));
    pid_t pid = getpid();
    for (int b = 0; b < 64; b += BATCH) {
        pthread_t t[BATCH];
        step("batch");
        PT(pthread_barrier_init(&many_barrier, NULL, BATCH));
        for (int i = 0; i < BATCH; i++) {
            int r = pthread_create(&t[i], &attr, t_many, (void *)(intptr_t)(b + i));
            EXPECT(r == 0, "pthread_create_%d_returned_%d", b + i, r);
        }
        for (int i = 0; i < BATCH; i++) {
            void *res = NULL;
            PT(pthread_join(t[i], &res));
            EXPECT(res == (void *)(intptr_t)(b + i + 1000), "thread_%d_returned_%p", b + i, res);
        }
        pthread_barrier_destroy(&many_barrier);
        for (int i = b; i < b + BATCH; i++) {
            EXPECT(many_tid[i] > 0 && many_tid[i] != pid, "thread_%d_tid=%d", i, (int)many_tid[i]);
            for (int j = b; j < i; j++)
                EXPECT(many_tid[i] != many_tid[j], "threads_%d_and_%d_share_tid_%d", i, j, (int)many_tid[i]);
        }
    }
    EXPECT(!many_barrier_bad, "barrier_wait_returned_%d", many_barrier_bad);
    pthread_attr_destroy(&attr);
    return NULL;
}

static sem_t det_sem;
static volatile pid_t det_tid[8];

static void *t_detached(void *arg) {
    det_tid[(intptr_t)arg] = my_tid();
    sem_post(&det_sem);
    return NULL;
}

static sem_t det_go;
static void *t_detach_later(void *arg) {
    det_tid[(intptr_t)arg] = my_tid();
    sem_post(&det_sem);
    sem_wait_all(&det_go);
    return NULL;
}

static const char *c_detached(void) {
    pthread_attr_t attr;
    int st = -1;
    PT(pthread_attr_init(&attr));
    PT(pthread_attr_getdetachstate(&attr, &st));
    EXPECT(st == PTHREAD_CREATE_JOINABLE, "default_detachstate=%d", st);
    PT(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED));
    PT(pthread_attr_getdetachstate(&attr, &st));
    EXPECT(st == PTHREAD_CREATE_DETACHED, "detachstate_read_back=%d", st);
    EXPECT(pthread_attr_setdetachstate(&attr, 12345) == EINVAL, "bad_detachstate_not_EINVAL");
    sem_init(&det_sem, 0, 0);
    sem_init(&det_go, 0, 0);
    /* Detached threads free themselves (musl's unmaps its own stack on the way out): each must end and go away. */
    for (int i = 0; i < 6; i++) {
        pthread_t t;
        step("detached_create");
        PT(pthread_create(&t, &attr, t_detached, (void *)(intptr_t)i));
        sem_wait_all(&det_sem);
        step("detached_gone");
        EXPECT(wait_thread_gone(det_tid[i], 3000), "detached_thread_%d_tid_%d_never_went_away", i, (int)det_tid[i]);
    }
    /* pthread_detach on a running joinable thread. */
    pthread_t t;
    PT(pthread_create(&t, NULL, t_detach_later, (void *)6));
    sem_wait_all(&det_sem);
    PT(pthread_detach(t));
    sem_post(&det_go);
    step("pthread_detach_gone");
    EXPECT(wait_thread_gone(det_tid[6], 3000), "pthread_detach_thread_never_went_away");
    pthread_attr_destroy(&attr);
    return NULL;
}

static void *t_big_stack(void *arg) {
    (void)arg;
    /* 512 KiB of locals: more than musl's default thread stack (128 KiB), so this needs the attribute. (Not
     * pthread_getattr_np: glibc's asks the kernel for the thread's CPU affinity.) */
    volatile char buf[512 * 1024];
    for (size_t i = 0; i < sizeof buf; i += 4096)
        buf[i] = (char)(i >> 12);
    long sum = 0;
    for (size_t i = 0; i < sizeof buf; i += 4096)
        sum += buf[i];
    return (void *)sum;
}

static const char *c_stacksize(void) {
    pthread_attr_t attr;
    size_t sz = 0;
    PT(pthread_attr_init(&attr));
    EXPECT(pthread_attr_setstacksize(&attr, 1) == EINVAL, "stacksize_1_not_EINVAL");
    PT(pthread_attr_setstacksize(&attr, 1 << 20));
    PT(pthread_attr_getstacksize(&attr, &sz));
    EXPECT(sz == 1 << 20, "stacksize_read_back=%zu", sz);
    pthread_t t;
    void *res = NULL;
    PT(pthread_create(&t, &attr, t_big_stack, NULL));
    PT(pthread_join(t, &res));
    long want = 0;
    for (size_t i = 0; i < 512 * 1024; i += 4096)
        want += (char)(i >> 12);
    EXPECT((long)res == want, "stack_contents_sum=%ld_want_%ld", (long)res, want);
    pthread_attr_destroy(&attr);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* mutexes */

static pthread_mutex_t mx = PTHREAD_MUTEX_INITIALIZER;
static volatile int mx_tried = -1, mx_got;
static sem_t mx_sem;

static void *t_try_then_lock(void *arg) {
    (void)arg;
    mx_tried = pthread_mutex_trylock(&mx);
    sem_post(&mx_sem);
    pthread_mutex_lock(&mx);
    store(&mx_got, 1);
    pthread_mutex_unlock(&mx);
    return NULL;
}

/* Run fn(m) in a new thread and return what it returned. */
static void *t_trylock(void *m) {
    int r = pthread_mutex_trylock(m);
    if (r == 0)
        pthread_mutex_unlock(m);
    return (void *)(intptr_t)r;
}

static void *t_unlock(void *m) {
    return (void *)(intptr_t)pthread_mutex_unlock(m);
}

static int in_thread(void *(*fn)(void *), void *arg) {
    pthread_t t;
    void *res = (void *)(intptr_t)-1000;
    if (pthread_create(&t, NULL, fn, arg) != 0)
        return -1001;
    pthread_join(t, &res);
    return (int)(intptr_t)res;
}

static const char *c_mutex_normal(void) {
    sem_init(&mx_sem, 0, 0);
    PT(pthread_mutex_lock(&mx));
    EXPECT(pthread_mutex_trylock(&mx) == EBUSY, "trylock_own_normal_mutex_not_EBUSY");
    pthread_t t;
    PT(pthread_create(&t, NULL, t_try_then_lock, NULL));
    sem_wait_all(&mx_sem);
    EXPECT(mx_tried == EBUSY, "other_thread_trylock=%d_want_EBUSY", mx_tried);
    /* The other thread is (or is about to be) blocked in pthread_mutex_lock: it cannot get the mutex we hold. */
    sleep_ms(20);
    EXPECT(!load(&mx_got), "other_thread_locked_a_held_mutex");
    PT(pthread_mutex_unlock(&mx));
    step("join_locker");
    PT(pthread_join(t, NULL));
    EXPECT(load(&mx_got), "blocked_locker_never_got_the_mutex");
    EXPECT(in_thread(t_trylock, &mx) == 0, "trylock_of_free_mutex_failed");
    return NULL;
}

static const char *c_mutex_recursive(void) {
    pthread_mutexattr_t a;
    pthread_mutex_t m;
    int type = -1;
    PT(pthread_mutexattr_init(&a));
    PT(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE));
    PT(pthread_mutexattr_gettype(&a, &type));
    EXPECT(type == PTHREAD_MUTEX_RECURSIVE, "gettype=%d", type);
    PT(pthread_mutex_init(&m, &a));
    PT(pthread_mutex_lock(&m));
    PT(pthread_mutex_lock(&m));
    PT(pthread_mutex_lock(&m));
    PT(pthread_mutex_trylock(&m)); /* the owner may relock: now held 4 deep */
    int r = in_thread(t_trylock, &m);
    EXPECT(r == EBUSY, "other_thread_trylock=%d_want_EBUSY", r);
    r = in_thread(t_unlock, &m);
    EXPECT(r == EPERM, "other_thread_unlock=%d_want_EPERM", r);
    for (int i = 0; i < 3; i++)
        PT(pthread_mutex_unlock(&m));
    r = in_thread(t_trylock, &m);
    EXPECT(r == EBUSY, "trylock_with_one_level_left=%d_want_EBUSY", r);
    PT(pthread_mutex_unlock(&m));
    EXPECT(pthread_mutex_unlock(&m) == EPERM, "unlock_of_unlocked_recursive_not_EPERM");
    r = in_thread(t_trylock, &m);
    EXPECT(r == 0, "trylock_after_full_unlock=%d", r);
    PT(pthread_mutex_destroy(&m));
    pthread_mutexattr_destroy(&a);
    return NULL;
}

static const char *c_mutex_errorcheck(void) {
    pthread_mutexattr_t a;
    pthread_mutex_t m;
    PT(pthread_mutexattr_init(&a));
    PT(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK));
    PT(pthread_mutex_init(&m, &a));
    EXPECT(pthread_mutex_unlock(&m) == EPERM, "unlock_unlocked_not_EPERM");
    PT(pthread_mutex_lock(&m));
    int r = pthread_mutex_lock(&m);
    EXPECT(r == EDEADLK, "relock=%d_want_EDEADLK", r);
    r = pthread_mutex_trylock(&m);
    EXPECT(r == EBUSY, "owner_trylock=%d_want_EBUSY", r);
    r = in_thread(t_unlock, &m);
    EXPECT(r == EPERM, "unlock_by_non_owner=%d_want_EPERM", r);
    r = in_thread(t_trylock, &m);
    EXPECT(r == EBUSY, "other_thread_trylock=%d_want_EBUSY", r);
    PT(pthread_mutex_unlock(&m));
    EXPECT(pthread_mutex_unlock(&m) == EPERM, "second_unlock_not_EPERM");
    r = in_thread(t_trylock, &m);
    EXPECT(r == 0, "trylock_after_unlock=%d", r);
    PT(pthread_mutex_destroy(&m));
    pthread_mutexattr_destroy(&a);
    return NULL;
}

/* 4 threads x 2000 increments of a plain int under a mutex, yielding inside the critical section now and then so
 * the others contend (and sleep in the kernel) even on one CPU: the sum must be exact. */
#define CONT_THREADS 4
#define CONT_ITERS 2000
static pthread_mutex_t cont_m = PTHREAD_MUTEX_INITIALIZER;
static volatile int cont_counter, cont_inside, cont_overlap;

static void *t_contend(void *arg) {
    (void)arg;
    for (int i = 0; i < CONT_ITERS; i++) {
        pthread_mutex_lock(&cont_m);
        if (add(&cont_inside, 1) != 1)
            cont_overlap = 1;
        int v = cont_counter;
        if (i % 64 == 0)
            sched_yield();
        cont_counter = v + 1;
        add(&cont_inside, -1);
        pthread_mutex_unlock(&cont_m);
    }
    return NULL;
}

static const char *c_mutex_contention(void) {
    pthread_t t[CONT_THREADS];
    for (int i = 0; i < CONT_THREADS; i++)
        PT(pthread_create(&t[i], NULL, t_contend, NULL));
    for (int i = 0; i < CONT_THREADS; i++)
        PT(pthread_join(t[i], NULL));
    EXPECT(!cont_overlap, "two_threads_inside_the_mutex");
    EXPECT(cont_counter == CONT_THREADS * CONT_ITERS, "counter=%d_want_%d", cont_counter, CONT_THREADS * CONT_ITERS);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* condition variables */

static pthread_mutex_t cv_m;
static pthread_cond_t cv_c = PTHREAD_COND_INITIALIZER, cv_all = PTHREAD_COND_INITIALIZER;
static volatile int cv_flag, cv_waiting, cv_woken, cv_unlock_rc = -1;

static void *t_cond_waiter(void *arg) {
    (void)arg;
    pthread_mutex_lock(&cv_m);
    cv_waiting++;
    pthread_cond_broadcast(&cv_all);
    while (!cv_flag)
        pthread_cond_wait(&cv_c, &cv_m);
    cv_woken++;
    /* cv_m is an error-checking mutex: unlocking succeeds only if pthread_cond_wait gave it back to us. */
    int r = pthread_mutex_unlock(&cv_m);
    if (r != 0)
        cv_unlock_rc = r;
    else if (cv_unlock_rc == -1)
        cv_unlock_rc = 0;
    return NULL;
}

static int init_errorcheck(pthread_mutex_t *m) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    int r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return r;
}

/* Wait until `n` waiters have counted themselves under cv_m. As they only release cv_m inside pthread_cond_wait,
 * holding cv_m and seeing cv_waiting == n proves they are all waiting on cv_c. Returns with cv_m held. */
static void wait_waiters(int n) {
    pthread_mutex_lock(&cv_m);
    while (cv_waiting < n)
        pthread_cond_wait(&cv_all, &cv_m);
}

static const char *cond_wake(int n, int broadcast) {
    PT(init_errorcheck(&cv_m));
    pthread_t t[8];
    for (int i = 0; i < n; i++)
        PT(pthread_create(&t[i], NULL, t_cond_waiter, NULL));
    step("wait_for_waiters");
    wait_waiters(n);
    EXPECT(cv_woken == 0, "woken_before_signal");
    cv_flag = 1;
    if (broadcast)
        PT(pthread_cond_broadcast(&cv_c));
    else
        PT(pthread_cond_signal(&cv_c));
    PT(pthread_mutex_unlock(&cv_m));
    step("join_waiters");
    for (int i = 0; i < n; i++)
        PT(pthread_join(t[i], NULL));
    EXPECT(cv_woken == n, "woken=%d_want_%d", cv_woken, n);
    EXPECT(cv_unlock_rc == 0, "mutex_not_held_after_cond_wait_unlock=%d", cv_unlock_rc);
    return NULL;
}

static const char *c_cond_signal(void) {
    return cond_wake(1, 0);
}

static const char *c_cond_broadcast(void) {
    return cond_wake(5, 1);
}

static const char *cond_timeout(int monotonic) {
    pthread_condattr_t a;
    pthread_cond_t c;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    clockid_t clk = monotonic ? CLOCK_MONOTONIC : CLOCK_REALTIME, got = -1;
    PT(pthread_condattr_init(&a));
    PT(pthread_condattr_getclock(&a, &got));
    EXPECT(got == CLOCK_REALTIME, "default_cond_clock=%d", (int)got);
    if (monotonic) {
        PT(pthread_condattr_setclock(&a, CLOCK_MONOTONIC));
        PT(pthread_condattr_getclock(&a, &got));
        EXPECT(got == CLOCK_MONOTONIC, "cond_clock_read_back=%d", (int)got);
    }
    PT(pthread_cond_init(&c, &a));
    PT(pthread_mutex_lock(&m));
    /* A deadline already past times out at once. */
    struct timespec past = abs_in(clk, -1000);
    long long t0 = now_ns();
    int r = pthread_cond_timedwait(&c, &m, &past);
    EXPECT(r == ETIMEDOUT, "past_deadline=%d_want_ETIMEDOUT", r);
    EXPECT(ms_since(t0) < 2000, "past_deadline_took_%lldms", ms_since(t0));
    /* 100 ms ahead: ETIMEDOUT, not early (10% slack for the clock's granularity), with the mutex held again. */
    struct timespec dl = abs_in(clk, 100);
    t0 = now_ns();
    do
        r = pthread_cond_timedwait(&c, &m, &dl);
    while (r == 0); /* a spurious wakeup is allowed */
    long long took = ms_since(t0);
    EXPECT(r == ETIMEDOUT, "timedwait=%d_want_ETIMEDOUT", r);
    EXPECT(took >= 90, "timed_out_after_%lldms_of_100", took);
    EXPECT(took < 3000, "timed_out_after_%lldms_of_100", took);
    EXPECT(pthread_mutex_trylock(&m) == EBUSY, "mutex_not_relocked_after_timeout");
    PT(pthread_mutex_unlock(&m));
    pthread_cond_destroy(&c);
    pthread_condattr_destroy(&a);
    return NULL;
}

static const char *c_cond_timedwait_realtime(void) {
    return cond_timeout(0);
}

static const char *c_cond_timedwait_monotonic(void) {
    return cond_timeout(1);
}

/* A timed wait that is signalled well before its deadline returns 0. */
static pthread_mutex_t cts_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cts_c;
static volatile int cts_flag;

static void *t_cts_signal(void *arg) {
    (void)arg;
    sleep_ms(20);
    pthread_mutex_lock(&cts_m);
    cts_flag = 1;
    pthread_cond_signal(&cts_c);
    pthread_mutex_unlock(&cts_m);
    return NULL;
}

static const char *c_cond_timedwait_signalled(void) {
    pthread_condattr_t a;
    PT(pthread_condattr_init(&a));
    PT(pthread_condattr_setclock(&a, CLOCK_MONOTONIC));
    PT(pthread_cond_init(&cts_c, &a));
    PT(pthread_mutex_lock(&cts_m));
    pthread_t t;
    PT(pthread_create(&t, NULL, t_cts_signal, NULL));
    struct timespec dl = abs_in(CLOCK_MONOTONIC, 5000);
    int r = 0;
    while (!cts_flag && r == 0)
        r = pthread_cond_timedwait(&cts_c, &cts_m, &dl);
    EXPECT(r == 0 && cts_flag, "timedwait=%d_flag=%d", r, cts_flag);
    PT(pthread_mutex_unlock(&cts_m));
    PT(pthread_join(t, NULL));
    return NULL;
}

/* Producer/consumer through a 4-slot queue: 2 producers x 500 items, 2 consumers. Every item arrives once, the
 * queue never holds more than 4, and each consumer sees each producer's items in increasing order (FIFO). */
#define PC_CAP 4
#define PC_ITEMS 500
static pthread_mutex_t pc_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pc_not_full = PTHREAD_COND_INITIALIZER, pc_not_empty = PTHREAD_COND_INITIALIZER;
static int pc_q[PC_CAP], pc_head, pc_len, pc_max_len, pc_bad_order;
static long pc_sum[2];
static int pc_count[2];

static void pc_put(int v) {
    pthread_mutex_lock(&pc_m);
    while (pc_len == PC_CAP)
        pthread_cond_wait(&pc_not_full, &pc_m);
    pc_q[(pc_head + pc_len) % PC_CAP] = v;
    pc_len++;
    if (pc_len > pc_max_len)
        pc_max_len = pc_len;
    pthread_cond_signal(&pc_not_empty);
    pthread_mutex_unlock(&pc_m);
}

static void *t_producer(void *arg) {
    int p = (int)(intptr_t)arg;
    for (int i = 1; i <= PC_ITEMS; i++)
        pc_put(p * 10000 + i);
    return NULL;
}

static void *t_consumer(void *arg) {
    int c = (int)(intptr_t)arg, last[2] = {0, 0};
    for (;;) {
        pthread_mutex_lock(&pc_m);
        while (pc_len == 0)
            pthread_cond_wait(&pc_not_empty, &pc_m);
        int v = pc_q[pc_head];
        pc_head = (pc_head + 1) % PC_CAP;
        pc_len--;
        pthread_cond_signal(&pc_not_full);
        pthread_mutex_unlock(&pc_m);
        if (v < 0)
            return NULL;
        int p = v / 10000, i = v % 10000;
        if (p < 0 || p > 1 || i <= last[p])
            pc_bad_order = v;
        else
            last[p] = i;
        pc_sum[c] += v;
        pc_count[c]++;
    }
}

static const char *c_producer_consumer(void) {
    pthread_t prod[2], cons[2];
    for (int i = 0; i < 2; i++)
        PT(pthread_create(&cons[i], NULL, t_consumer, (void *)(intptr_t)i));
    for (int i = 0; i < 2; i++)
        PT(pthread_create(&prod[i], NULL, t_producer, (void *)(intptr_t)i));
    step("join_producers");
    for (int i = 0; i < 2; i++)
        PT(pthread_join(prod[i], NULL));
    pc_put(-1);
    pc_put(-1);
    step("join_consumers");
    for (int i = 0; i < 2; i++)
        PT(pthread_join(cons[i], NULL));
    long want = 0;
    for (int p = 0; p < 2; p++)
        for (int i = 1; i <= PC_ITEMS; i++)
            want += p * 10000 + i;
    EXPECT(pc_count[0] + pc_count[1] == 2 * PC_ITEMS, "consumed=%d+%d_want_%d", pc_count[0], pc_count[1], 2 * PC_ITEMS);
    EXPECT(pc_sum[0] + pc_sum[1] == want, "sum=%ld_want_%ld", pc_sum[0] + pc_sum[1], want);
    EXPECT(!pc_bad_order, "item_%d_out_of_order", pc_bad_order);
    EXPECT(pc_max_len <= PC_CAP, "queue_held_%d", pc_max_len);
    EXPECT(pc_len == 0, "queue_left_%d", pc_len);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* rwlocks, barriers, once, semaphores */

static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static volatile int rw_writer_in;

static void *t_rw_try(void *arg) {
    (void)arg;
    int rd = pthread_rwlock_tryrdlock(&rw);
    if (rd == 0)
        pthread_rwlock_unlock(&rw);
    int wr = pthread_rwlock_trywrlock(&rw);
    if (wr == 0)
        pthread_rwlock_unlock(&rw);
    return (void *)(intptr_t)(rd * 1000 + wr);
}

static void *t_rw_writer(void *arg) {
    (void)arg;
    pthread_rwlock_wrlock(&rw);
    store(&rw_writer_in, 1);
    pthread_rwlock_unlock(&rw);
    return NULL;
}

static const char *c_rwlock(void) {
    /* Read-held: other readers get in, writers do not. */
    PT(pthread_rwlock_rdlock(&rw));
    int r = in_thread(t_rw_try, NULL);
    EXPECT(r == 0 * 1000 + EBUSY, "read_held_tryrdlock=%d_trywrlock=%d", r / 1000, r % 1000);
    /* A blocked writer gets in only once the readers are gone. */
    pthread_t w;
    PT(pthread_create(&w, NULL, t_rw_writer, NULL));
    sleep_ms(20);
    EXPECT(!load(&rw_writer_in), "writer_got_in_while_read_held");
    PT(pthread_rwlock_unlock(&rw));
    step("join_writer");
    PT(pthread_join(w, NULL));
    EXPECT(load(&rw_writer_in), "writer_never_got_in");
    /* Write-held: nobody else gets in. */
    PT(pthread_rwlock_wrlock(&rw));
    r = in_thread(t_rw_try, NULL);
    EXPECT(r == EBUSY * 1000 + EBUSY, "write_held_tryrdlock=%d_trywrlock=%d", r / 1000, r % 1000);
    PT(pthread_rwlock_unlock(&rw));
    r = in_thread(t_rw_try, NULL);
    EXPECT(r == 0, "free_tryrdlock=%d_trywrlock=%d", r / 1000, r % 1000);
    /* Several read locks at once, in one thread. */
    PT(pthread_rwlock_rdlock(&rw));
    PT(pthread_rwlock_tryrdlock(&rw));
    PT(pthread_rwlock_unlock(&rw));
    PT(pthread_rwlock_unlock(&rw));
    return NULL;
}

#define BAR_THREADS 4
#define BAR_ROUNDS 5
static pthread_barrier_t bar;
static volatile int bar_arrived[BAR_ROUNDS], bar_serial[BAR_ROUNDS], bar_early, bar_bad_rc;

static void *t_barrier(void *arg) {
    (void)arg;
    for (int r = 0; r < BAR_ROUNDS; r++) {
        add(&bar_arrived[r], 1);
        int rc = pthread_barrier_wait(&bar);
        if (rc == PTHREAD_BARRIER_SERIAL_THREAD)
            add(&bar_serial[r], 1);
        else if (rc != 0)
            bar_bad_rc = rc;
        /* Nobody leaves a round before everybody has arrived in it. */
        if (load(&bar_arrived[r]) != BAR_THREADS)
            bar_early = 1;
    }
    return NULL;
}

static const char *c_barrier(void) {
    PT(pthread_barrier_init(&bar, NULL, BAR_THREADS));
    pthread_t t[BAR_THREADS];
    for (int i = 0; i < BAR_THREADS; i++)
        PT(pthread_create(&t[i], NULL, t_barrier, NULL));
    step("join");
    for (int i = 0; i < BAR_THREADS; i++)
        PT(pthread_join(t[i], NULL));
    EXPECT(!bar_bad_rc, "barrier_wait_returned_%d", bar_bad_rc);
    EXPECT(!bar_early, "a_thread_passed_the_barrier_early");
    for (int r = 0; r < BAR_ROUNDS; r++)
        EXPECT(bar_serial[r] == 1, "round_%d_had_%d_serial_threads", r, bar_serial[r]);
    PT(pthread_barrier_destroy(&bar));
    return NULL;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static volatile int once_calls, once_done, once_saw_undone;

static void once_init(void) {
    add(&once_calls, 1);
    sleep_ms(30); /* the other callers must wait for this to finish, not skip it */
    store(&once_done, 1);
}

static void *t_once(void *arg) {
    (void)arg;
    pthread_once(&once, once_init);
    if (!load(&once_done))
        store(&once_saw_undone, 1);
    return NULL;
}

static const char *c_once(void) {
    pthread_t t[6];
    for (int i = 0; i < 6; i++)
        PT(pthread_create(&t[i], NULL, t_once, NULL));
    for (int i = 0; i < 6; i++)
        PT(pthread_join(t[i], NULL));
    PT(pthread_once(&once, once_init));
    EXPECT(once_calls == 1, "init_ran_%d_times", once_calls);
    EXPECT(!once_saw_undone, "pthread_once_returned_before_init_finished");
    return NULL;
}

static sem_t sm;
static volatile int sm_done;

static void *t_sem_waiter(void *arg) {
    (void)arg;
    sem_wait_all(&sm);
    store(&sm_done, 1);
    return NULL;
}

static const char *c_semaphore(void) {
    int v = -1;
    EXPECT(sem_init(&sm, 0, 2) == 0, "sem_init_errno=%d", errno);
    EXPECT(sem_getvalue(&sm, &v) == 0 && v == 2, "initial_value=%d", v);
    EXPECT(sem_trywait(&sm) == 0 && sem_trywait(&sm) == 0, "trywait_with_value_failed_errno=%d", errno);
    errno = 0;
    EXPECT(sem_trywait(&sm) == -1 && errno == EAGAIN, "trywait_at_zero_errno=%d_want_EAGAIN", errno);
    /* A waiter blocks until a post. */
    pthread_t t;
    PT(pthread_create(&t, NULL, t_sem_waiter, NULL));
    sleep_ms(20);
    EXPECT(!load(&sm_done), "sem_wait_returned_at_zero");
    EXPECT(sem_post(&sm) == 0, "sem_post_errno=%d", errno);
    step("join_waiter");
    PT(pthread_join(t, NULL));
    EXPECT(load(&sm_done), "waiter_not_done");
    EXPECT(sem_getvalue(&sm, &v) == 0 && v == 0, "value_after_wait=%d", v);
    /* sem_timedwait takes an absolute CLOCK_REALTIME deadline. */
    struct timespec past = abs_in(CLOCK_REALTIME, -1000);
    errno = 0;
    EXPECT(sem_timedwait(&sm, &past) == -1 && errno == ETIMEDOUT, "past_deadline_errno=%d_want_ETIMEDOUT", errno);
    struct timespec dl = abs_in(CLOCK_REALTIME, 100);
    long long t0 = now_ns();
    int r;
    errno = 0;
    while ((r = sem_timedwait(&sm, &dl)) == -1 && errno == EINTR) {
    }
    long long took = ms_since(t0);
    EXPECT(r == -1 && errno == ETIMEDOUT, "timedwait=%d_errno=%d_want_ETIMEDOUT", r, errno);
    EXPECT(took >= 90 && took < 3000, "timed_out_after_%lldms_of_100", took);
    EXPECT(sem_post(&sm) == 0, "sem_post2_errno=%d", errno);
    dl = abs_in(CLOCK_REALTIME, 5000);
    EXPECT(sem_timedwait(&sm, &dl) == 0, "timedwait_with_value_errno=%d", errno);
    EXPECT(sem_destroy(&sm) == 0, "sem_destroy_errno=%d", errno);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* thread-local storage and thread-specific data */

static __thread int tl_int = 42;
static __thread long tl_zero;
static _Thread_local long tl_aligned[4] __attribute__((aligned(64))) = {1, 2, 3, 4};

struct tls_seen {
    int int_init;
    long zero_init, a0, a3;
    uintptr_t int_addr, aligned_addr, errno_addr;
};
static struct tls_seen tls_seen[3];
static pthread_barrier_t tls_bar;

static void *t_tls(void *arg) {
    int i = (int)(intptr_t)arg;
    struct tls_seen *s = &tls_seen[i];
    s->int_init = tl_int;
    s->zero_init = tl_zero;
    s->a0 = tl_aligned[0];
    s->a3 = tl_aligned[3];
    s->int_addr = (uintptr_t)&tl_int;
    s->aligned_addr = (uintptr_t)&tl_aligned[0];
    s->errno_addr = (uintptr_t)&errno;
    tl_int = 100 + i;
    tl_zero = 200 + i;
    pthread_barrier_wait(&tls_bar); /* all three live (and have written) at once */
    return (void *)(intptr_t)(tl_int == 100 + i && tl_zero == 200 + i);
}

static const char *c_tls(void) {
    /* The main thread changes its copies first: new threads start from the initial image, not from these. */
    tl_int = 7;
    tl_zero = 8;
    tl_aligned[0] = 9;
    PT(pthread_barrier_init(&tls_bar, NULL, 3));
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        PT(pthread_create(&t[i], NULL, t_tls, (void *)(intptr_t)i));
    for (int i = 0; i < 3; i++) {
        void *res = NULL;
        PT(pthread_join(t[i], &res));
        EXPECT(res == (void *)1, "thread_%d_lost_its_own_values", i);
    }
    for (int i = 0; i < 3; i++) {
        struct tls_seen *s = &tls_seen[i];
        EXPECT(s->int_init == 42, "thread_%d_initial_tl_int=%d_want_42", i, s->int_init);
        EXPECT(s->zero_init == 0, "thread_%d_initial_tbss=%ld_want_0", i, s->zero_init);
        EXPECT(s->a0 == 1 && s->a3 == 4, "thread_%d_initial_array=%ld,%ld", i, s->a0, s->a3);
        EXPECT(s->aligned_addr % 64 == 0, "thread_%d_aligned_tls_at_%#lx", i, (unsigned long)s->aligned_addr);
        EXPECT(s->int_addr != (uintptr_t)&tl_int, "thread_%d_shares_main_tls", i);
        EXPECT(s->errno_addr != (uintptr_t)&errno, "thread_%d_shares_main_errno", i);
        for (int j = 0; j < i; j++)
            EXPECT(s->int_addr != tls_seen[j].int_addr && s->errno_addr != tls_seen[j].errno_addr,
                   "threads_%d_and_%d_share_tls", i, j);
    }
    EXPECT(tl_int == 7 && tl_zero == 8 && tl_aligned[0] == 9, "main_tls_changed_to_%d,%ld,%ld", tl_int, tl_zero,
           tl_aligned[0]);
    EXPECT((uintptr_t)&tl_aligned[0] % 64 == 0, "main_aligned_tls_misaligned");
    pthread_barrier_destroy(&tls_bar);
    return NULL;
}

static pthread_key_t key, key2;
static volatile int dtor_calls, dtor_bad, dtor2_calls;
static volatile uintptr_t dtor_seen[8];
static int tsd_slot[4];
static volatile int tsd_initial_nonnull;

static void dtor(void *v) {
    int n = add(&dtor_calls, 1);
    if (n <= 8)
        dtor_seen[n - 1] = (uintptr_t)v;
    /* The value is reset to NULL before the destructor runs. */
    if (pthread_getspecific(key) != NULL)
        dtor_bad = 1;
}

/* Sets its value again the first time: the destructors run again (up to PTHREAD_DESTRUCTOR_ITERATIONS rounds). */
static void dtor2(void *v) {
    if (add(&dtor2_calls, 1) == 1)
        pthread_setspecific(key2, v);
}

static void *t_tsd(void *arg) {
    int i = (int)(intptr_t)arg;
    if (pthread_getspecific(key) != NULL)
        tsd_initial_nonnull = 1;
    if (i < 3)
        pthread_setspecific(key, &tsd_slot[i]); /* thread 3 leaves NULL: no destructor call for it */
    if (pthread_getspecific(key) != (i < 3 ? &tsd_slot[i] : NULL))
        return (void *)0;
    if (i == 0)
        pthread_setspecific(key2, &tsd_slot[3]);
    return (void *)1;
}

static const char *c_tsd(void) {
    PT(pthread_key_create(&key, dtor));
    PT(pthread_key_create(&key2, dtor2));
    EXPECT(pthread_getspecific(key) == NULL, "new_key_not_NULL_in_main");
    int mine = 0;
    PT(pthread_setspecific(key, &mine));
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        PT(pthread_create(&t[i], NULL, t_tsd, (void *)(intptr_t)i));
    for (int i = 0; i < 4; i++) {
        void *res = NULL;
        PT(pthread_join(t[i], &res));
        EXPECT(res == (void *)1, "thread_%d_getspecific_wrong", i);
    }
    EXPECT(!tsd_initial_nonnull, "thread_inherited_a_value");
    EXPECT(dtor_calls == 3, "destructor_ran_%d_times_want_3", dtor_calls);
    for (int i = 0; i < 3; i++) {
        int found = 0;
        for (int j = 0; j < 3; j++)
            found |= dtor_seen[j] == (uintptr_t)&tsd_slot[i];
        EXPECT(found, "destructor_never_got_thread_%d_value", i);
    }
    EXPECT(!dtor_bad, "value_not_NULL_inside_destructor");
    EXPECT(dtor2_calls == 2, "re_set_value_destructor_ran_%d_times_want_2", dtor2_calls);
    EXPECT(pthread_getspecific(key) == &mine, "main_value_changed");
    PT(pthread_key_delete(key));
    PT(pthread_key_delete(key2));
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* signals and threads */

static volatile pid_t sig_tid;
static volatile int sig_hits;
static sem_t sig_handled, sig_ready, sig_go;

static void h_record_tid(int sig) {
    (void)sig;
    sig_tid = my_tid();
    add(&sig_hits, 1);
    sem_post(&sig_handled);
}

static volatile pid_t sig_target_tid;

static void *t_sig_target(void *arg) {
    int unblock = (int)(intptr_t)arg;
    if (unblock)
        thread_mask(SIG_UNBLOCK, unblock);
    sig_target_tid = my_tid();
    sem_post(&sig_ready);
    sem_wait_all(&sig_go);
    return NULL;
}

/* tgkill (and tkill, pthread_kill) direct a signal at one thread: its handler runs in that thread, even though
 * the main thread does not block the signal either. */
static const char *c_tgkill_thread(void) {
    sem_init(&sig_handled, 0, 0);
    sem_init(&sig_ready, 0, 0);
    sem_init(&sig_go, 0, 0);
    on(SIGUSR1, h_record_tid, 0);
    pthread_t t;
    PT(pthread_create(&t, NULL, t_sig_target, NULL));
    sem_wait_all(&sig_ready);
    pid_t target = sig_target_tid;
    EXPECT(tg_kill(getpid(), target, SIGUSR1) == 0, "tgkill_errno=%d", errno);
    step("wait_handler_tgkill");
    sem_wait_all(&sig_handled);
    EXPECT(sig_tid == target, "tgkill_handled_by_%d_want_%d_main_%d", (int)sig_tid, (int)target, (int)getpid());
    sig_tid = 0;
    EXPECT(syscall(SYS_tkill, target, SIGUSR1) == 0, "tkill_errno=%d", errno);
    step("wait_handler_tkill");
    sem_wait_all(&sig_handled);
    EXPECT(sig_tid == target, "tkill_handled_by_%d_want_%d", (int)sig_tid, (int)target);
    sig_tid = 0;
    PT(pthread_kill(t, SIGUSR1));
    step("wait_handler_pthread_kill");
    sem_wait_all(&sig_handled);
    EXPECT(sig_tid == target, "pthread_kill_handled_by_%d_want_%d", (int)sig_tid, (int)target);
    EXPECT(sig_hits == 3, "handler_ran_%d_times", sig_hits);
    sem_post(&sig_go);
    PT(pthread_join(t, NULL));
    return NULL;
}

/* A process-directed signal goes to a thread that does not block it: here only one thread leaves SIGUSR2
 * unblocked (the main thread and two others block it), so that thread runs the handler. */
static const char *c_kill_process_directed(void) {
    sem_init(&sig_handled, 0, 0);
    sem_init(&sig_ready, 0, 0);
    sem_init(&sig_go, 0, 0);
    on(SIGUSR2, h_record_tid, 0);
    EXPECT(thread_mask(SIG_BLOCK, SIGUSR2) == 0, "block_errno=%d", errno); /* inherited by the threads below */
    pthread_t t[3];
    pid_t tids[3];
    for (int i = 0; i < 3; i++) {
        PT(pthread_create(&t[i], NULL, t_sig_target, (void *)(intptr_t)(i == 1 ? SIGUSR2 : 0)));
        sem_wait_all(&sig_ready);
        tids[i] = sig_target_tid;
    }
    EXPECT(kill(getpid(), SIGUSR2) == 0, "kill_errno=%d", errno);
    step("wait_handler");
    sem_wait_all(&sig_handled);
    EXPECT(sig_tid == tids[1], "handled_by_%d_want_%d_(others_%d,%d,main_%d)", (int)sig_tid, (int)tids[1],
           (int)tids[0], (int)tids[2], (int)getpid());
    EXPECT(sig_hits == 1, "handler_ran_%d_times", sig_hits);
    EXPECT(!thread_pending(SIGUSR2), "still_pending_after_delivery");
    for (int i = 0; i < 3; i++)
        sem_post(&sig_go);
    for (int i = 0; i < 3; i++)
        PT(pthread_join(t[i], NULL));
    return NULL;
}

static volatile int msk_inherited = -1, msk_usr1_after = -1, msk_usr2_after = -1, msk_sees_main_pending = -1;
static sem_t msk_ready, msk_go, msk_done;

static void *t_mask(void *arg) {
    (void)arg;
    msk_inherited = thread_blocks(SIGUSR1);
    thread_mask(SIG_UNBLOCK, SIGUSR1);
    thread_mask(SIG_BLOCK, SIGUSR2);
    msk_usr1_after = thread_blocks(SIGUSR1);
    msk_usr2_after = thread_blocks(SIGUSR2);
    sem_post(&msk_ready);
    sem_wait_all(&msk_go);
    /* sigpending() is this thread's pending set plus the process's: not another thread's private one. */
    msk_sees_main_pending = thread_pending(SIGUSR1);
    sem_post(&msk_done);
    return NULL;
}

static const char *c_sigmask_per_thread(void) {
    sem_init(&sig_handled, 0, 0);
    sem_init(&msk_ready, 0, 0);
    sem_init(&msk_go, 0, 0);
    sem_init(&msk_done, 0, 0);
    on(SIGUSR1, h_record_tid, 0);
    EXPECT(thread_mask(SIG_BLOCK, SIGUSR1) == 0, "block_errno=%d", errno);
    pthread_t t;
    PT(pthread_create(&t, NULL, t_mask, NULL));
    sem_wait_all(&msk_ready);
    EXPECT(msk_inherited == 1, "new_thread_did_not_inherit_the_mask");
    EXPECT(msk_usr1_after == 0 && msk_usr2_after == 1, "thread_mask_change_failed_usr1=%d_usr2=%d", msk_usr1_after,
           msk_usr2_after);
    EXPECT(thread_blocks(SIGUSR1) == 1 && thread_blocks(SIGUSR2) == 0, "thread_changed_main_mask_usr1=%d_usr2=%d",
           thread_blocks(SIGUSR1), thread_blocks(SIGUSR2));
    /* Pending on the main thread only (it blocks SIGUSR1; the other thread does not, but this is not for it). */
    EXPECT(tg_kill(getpid(), getpid(), SIGUSR1) == 0, "tgkill_errno=%d", errno);
    EXPECT(thread_pending(SIGUSR1), "not_pending_on_main");
    EXPECT(sig_hits == 0, "thread_directed_signal_taken_by_the_other_thread");
    sem_post(&msk_go);
    sem_wait_all(&msk_done);
    EXPECT(msk_sees_main_pending == 0, "other_thread_sees_main_thread_pending_signal");
    PT(pthread_join(t, NULL));
    EXPECT(sig_hits == 0, "taken_while_blocked");
    /* Unblocking delivers it, here, before pthread_sigmask returns. */
    EXPECT(thread_mask(SIG_UNBLOCK, SIGUSR1) == 0, "unblock_errno=%d", errno);
    EXPECT(sig_hits == 1 && sig_tid == getpid(), "after_unblock_hits=%d_tid=%d", sig_hits, (int)sig_tid);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* futexes (raw system calls) */

static volatile int fw_word, fw_word2, fw_arrived;
#define NOT_RETURNED (-99L)
static volatile long fw_rc[4];
static volatile int fw_errno[4];

/* A waiter that FUTEX_WAITs once on fw_word (value 0) with `op`/`bitset` and records how that ended. */
struct fw_arg {
    int idx, op, bitset;
};
static void *t_futex_once(void *argp) {
    struct fw_arg *a = argp;
    add(&fw_arrived, 1);
    long r = futex(&fw_word, a->op, 0, NULL, NULL, a->bitset);
    fw_errno[a->idx] = r == -1 ? errno : 0;
    fw_rc[a->idx] = r;
    return NULL;
}

/* Wake (op on `word`, at most `n`) until `want` waiters in all have been woken: a waiter that has not reached
 * FUTEX_WAIT yet is simply not woken, so this loops until they have. The total of all results must be exactly
 * `want`: the waiters wait once each. Returns that total, or -1 with a bad return value. */
static int wake_until(volatile int *word, int op, int n, int bitset, int want) {
    int total = 0;
    long long end = now_ns() + 5000 * 1000000LL;
    while (total < want && now_ns() < end) {
        long r = futex(word, op, n, NULL, NULL, bitset);
        if (r < 0 || r > n)
            return -1;
        total += (int)r;
        if (total < want)
            sleep_ms(1);
    }
    return total;
}

static const char *c_futex_wait_value_mismatch(void) {
    volatile int w = 1;
    errno = 0;
    EXPECT(futex(&w, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0) == -1 && errno == EAGAIN,
           "private_wait_errno=%d_want_EAGAIN", errno);
    errno = 0;
    EXPECT(futex(&w, FUTEX_WAIT, 0, NULL, NULL, 0) == -1 && errno == EAGAIN, "shared_wait_errno=%d_want_EAGAIN",
           errno);
    /* A zero relative timeout with the value matching: times out at once. */
    struct timespec zero = {0, 0};
    errno = 0;
    EXPECT(futex(&w, FUTEX_WAIT_PRIVATE, 1, &zero, NULL, 0) == -1 && errno == ETIMEDOUT,
           "zero_timeout_errno=%d_want_ETIMEDOUT", errno);
    return NULL;
}

static const char *c_futex_wait_timeout(void) {
    volatile int w = 0;
    struct timespec ts = {0, 50 * 1000000L};
    long long t0 = now_ns();
    errno = 0;
    long r = futex(&w, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
    long long took = ms_since(t0);
    EXPECT(r == -1 && errno == ETIMEDOUT, "wait=%ld_errno=%d_want_ETIMEDOUT", r, errno);
    /* FUTEX_WAIT's timeout is relative (measured on CLOCK_MONOTONIC); 10% slack for the clock's granularity. */
    EXPECT(took >= 45 && took < 3000, "timed_out_after_%lldms_of_50", took);
    return NULL;
}

static const char *c_futex_wake_counts(void) {
    /* Nobody waiting: FUTEX_WAKE wakes 0. */
    EXPECT(futex(&fw_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) == 0, "wake_without_waiters_not_0");
    EXPECT(futex(&fw_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0) == 0, "wake_all_without_waiters_not_0");
    /* One waiter: once it is asleep, FUTEX_WAKE returns 1 (and it returns 0 from FUTEX_WAIT). */
    static struct fw_arg a[4];
    pthread_t t[4];
    a[0] = (struct fw_arg){0, FUTEX_WAIT_PRIVATE, 0};
    PT(pthread_create(&t[0], NULL, t_futex_once, &a[0]));
    step("wake_one");
    int n = wake_until(&fw_word, FUTEX_WAKE_PRIVATE, 1, 0, 1);
    EXPECT(n == 1, "woke_%d_want_1", n);
    PT(pthread_join(t[0], NULL));
    EXPECT(fw_rc[0] == 0, "waiter_wait_returned_%ld_errno_%d", fw_rc[0], fw_errno[0]);
    /* Three waiters, woken with INT_MAX: the results add up to exactly 3. */
    for (int i = 1; i < 4; i++) {
        a[i] = (struct fw_arg){i, FUTEX_WAIT_PRIVATE, 0};
        PT(pthread_create(&t[i], NULL, t_futex_once, &a[i]));
    }
    step("wake_three");
    n = wake_until(&fw_word, FUTEX_WAKE_PRIVATE, INT_MAX, 0, 3);
    EXPECT(n == 3, "woke_%d_want_3", n);
    for (int i = 1; i < 4; i++) {
        PT(pthread_join(t[i], NULL));
        EXPECT(fw_rc[i] == 0, "waiter_%d_wait_returned_%ld_errno_%d", i, fw_rc[i], fw_errno[i]);
    }
    EXPECT(futex(&fw_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0) == 0, "wake_after_all_woken_not_0");
    return NULL;
}

/* Without FUTEX_PRIVATE_FLAG, on this process's private memory: a waiter and a waker in one process still meet. */
static const char *c_futex_shared_ops_private_memory(void) {
    static struct fw_arg a = {0, FUTEX_WAIT, 0};
    pthread_t t;
    PT(pthread_create(&t, NULL, t_futex_once, &a));
    step("wake");
    int n = wake_until(&fw_word, FUTEX_WAKE, 1, 0, 1);
    EXPECT(n == 1, "woke_%d_want_1", n);
    PT(pthread_join(t, NULL));
    EXPECT(fw_rc[0] == 0, "waiter_wait_returned_%ld_errno_%d", fw_rc[0], fw_errno[0]);
    return NULL;
}

static const char *c_futex_errors(void) {
    static int words[2] __attribute__((aligned(8)));
    struct timespec ts = {0, 10000000};
    /* Not 4-byte aligned. */
    volatile int *odd = (volatile int *)((char *)words + 1);
    errno = 0;
    EXPECT(futex(odd, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0) == -1 && errno == EINVAL,
           "unaligned_wait_errno=%d_want_EINVAL", errno);
    errno = 0;
    EXPECT(futex(odd, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) == -1 && errno == EINVAL,
           "unaligned_wake_errno=%d_want_EINVAL", errno);
    /* An unmapped word: FUTEX_WAIT must read it. (A private FUTEX_WAKE need not, so it is not tested.) */
    char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(page != MAP_FAILED, "mmap_errno=%d", errno);
    EXPECT(munmap(page, 4096) == 0, "munmap_errno=%d", errno);
    errno = 0;
    EXPECT(futex((volatile int *)page, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0) == -1 && errno == EFAULT,
           "unmapped_wait_errno=%d_want_EFAULT", errno);
    errno = 0;
    EXPECT(futex((volatile int *)page, FUTEX_WAIT, 0, &ts, NULL, 0) == -1 && errno == EFAULT,
           "unmapped_shared_wait_errno=%d_want_EFAULT", errno);
    /* A timeout with tv_nsec out of range. */
    struct timespec bad = {0, 1000000000L};
    errno = 0;
    EXPECT(futex(&words[0], FUTEX_WAIT_PRIVATE, 0, &bad, NULL, 0) == -1 && errno == EINVAL,
           "bad_timeout_errno=%d_want_EINVAL", errno);
    /* A zero bitset matches nobody: EINVAL for both. */
    errno = 0;
    EXPECT(futex(&words[0], FUTEX_WAKE_BITSET_PRIVATE, 1, NULL, NULL, 0) == -1 && errno == EINVAL,
           "wake_bitset_0_errno=%d_want_EINVAL", errno);
    errno = 0;
    EXPECT(futex(&words[0], FUTEX_WAIT_BITSET_PRIVATE, 0, &ts, NULL, 0) == -1 && errno == EINVAL,
           "wait_bitset_0_errno=%d_want_EINVAL", errno);
    /* FUTEX_CMP_REQUEUE whose val3 is not the word's value. */
    words[0] = 5;
    errno = 0;
    EXPECT(futex_requeue(&words[0], FUTEX_CMP_REQUEUE_PRIVATE, 1, 1, &words[1], 6) == -1 && errno == EAGAIN,
           "cmp_requeue_mismatch_errno=%d_want_EAGAIN", errno);
    EXPECT(futex_requeue(&words[0], FUTEX_CMP_REQUEUE_PRIVATE, 1, 1, &words[1], 5) == 0, "cmp_requeue_match_errno=%d",
           errno);
    /* An operation that does not exist. */
    errno = 0;
    EXPECT(futex(&words[0], 99 | FUTEX_PRIVATE_FLAG, 0, NULL, NULL, 0) == -1 && errno == ENOSYS,
           "unknown_op_errno=%d_want_ENOSYS", errno);
    return NULL;
}

static const char *c_futex_requeue(void) {
    static struct fw_arg a[2];
    pthread_t t[2];
    volatile int w3 = 0;
    for (int i = 0; i < 2; i++) {
        fw_rc[i] = NOT_RETURNED;
        a[i] = (struct fw_arg){i, FUTEX_WAIT_PRIVATE, 0};
        PT(pthread_create(&t[i], NULL, t_futex_once, &a[i]));
    }
    /* Move both waiters from fw_word to fw_word2, waking none: FUTEX_CMP_REQUEUE returns woken + requeued, and a
     * waiter not asleep yet is not counted, so loop until both have been moved. */
    step("cmp_requeue");
    int moved = 0;
    long long end = now_ns() + 5000 * 1000000LL;
    while (moved < 2 && now_ns() < end) {
        long r = futex_requeue(&fw_word, FUTEX_CMP_REQUEUE_PRIVATE, 0, INT_MAX, &fw_word2, 0);
        EXPECT(r >= 0 && r <= 2 - moved, "cmp_requeue=%ld_errno=%d_after_%d", r, errno, moved);
        moved += (int)r;
        if (moved < 2)
            sleep_ms(1);
    }
    EXPECT(moved == 2, "requeued_%d_want_2", moved);
    EXPECT(fw_rc[0] == NOT_RETURNED && fw_rc[1] == NOT_RETURNED, "a_waiter_returned_early_%ld,%ld_errno_%d,%d",
           fw_rc[0], fw_rc[1], fw_errno[0], fw_errno[1]);
    /* Both wait on fw_word2 now: nobody on fw_word. Plain FUTEX_REQUEUE moves them on to w3; like CMP_REQUEUE
     * it returns woken + requeued (kernel/futex/requeue.c counts both), here 2. */
    EXPECT(futex(&fw_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0) == 0, "waiters_left_on_the_first_word");
    long r = futex_requeue(&fw_word2, FUTEX_REQUEUE_PRIVATE, 0, INT_MAX, &w3, 0);
    EXPECT(r == 2, "requeue=%ld_errno=%d_want_2", r, errno);
    EXPECT(futex(&fw_word2, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0) == 0, "waiters_left_on_the_second_word");
    sleep_ms(10);
    EXPECT(fw_rc[0] == NOT_RETURNED && fw_rc[1] == NOT_RETURNED, "a_waiter_returned_before_the_wake_%ld,%ld", fw_rc[0],
           fw_rc[1]);
    r = futex(&w3, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    EXPECT(r == 2, "wake_on_third_word=%ld_want_2", r);
    for (int i = 0; i < 2; i++)
        PT(pthread_join(t[i], NULL));
    EXPECT(fw_rc[0] == 0 && fw_rc[1] == 0, "waiters_returned_%ld,%ld_errno_%d,%d", fw_rc[0], fw_rc[1], fw_errno[0],
           fw_errno[1]);
    return NULL;
}

static const char *c_futex_bitset(void) {
    volatile int w = 0;
    /* FUTEX_WAIT_BITSET's timeout is absolute, on CLOCK_MONOTONIC, or CLOCK_REALTIME with FUTEX_CLOCK_REALTIME. */
    struct timespec past = abs_in(CLOCK_MONOTONIC, -1000);
    errno = 0;
    EXPECT(futex(&w, FUTEX_WAIT_BITSET_PRIVATE, 0, &past, NULL, FUTEX_BITSET_MATCH_ANY) == -1 && errno == ETIMEDOUT,
           "monotonic_past_errno=%d_want_ETIMEDOUT", errno);
    past = abs_in(CLOCK_REALTIME, -1000);
    errno = 0;
    EXPECT(futex(&w, FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME, 0, &past, NULL, FUTEX_BITSET_MATCH_ANY) == -1 &&
               errno == ETIMEDOUT,
           "realtime_past_errno=%d_want_ETIMEDOUT", errno);
    struct timespec dl = abs_in(CLOCK_MONOTONIC, 50);
    long long t0 = now_ns();
    errno = 0;
    long r = futex(&w, FUTEX_WAIT_BITSET_PRIVATE, 0, &dl, NULL, FUTEX_BITSET_MATCH_ANY);
    long long took = ms_since(t0);
    EXPECT(r == -1 && errno == ETIMEDOUT, "abs_50ms=%ld_errno=%d_want_ETIMEDOUT", r, errno);
    EXPECT(took >= 45 && took < 3000, "timed_out_after_%lldms_of_50", took);
    /* Wakes pick waiters by bitset: waiter 0 waits on bit 0, waiter 1 on bit 1. */
    static struct fw_arg a[2];
    pthread_t t[2];
    a[0] = (struct fw_arg){0, FUTEX_WAIT_BITSET_PRIVATE, 1};
    a[1] = (struct fw_arg){1, FUTEX_WAIT_BITSET_PRIVATE, 2};
    fw_rc[0] = fw_rc[1] = NOT_RETURNED;
    for (int i = 0; i < 2; i++)
        PT(pthread_create(&t[i], NULL, t_futex_once, &a[i]));
    step("wake_bit1");
    int n = wake_until(&fw_word, FUTEX_WAKE_BITSET_PRIVATE, INT_MAX, 2, 1);
    EXPECT(n == 1, "bitset_2_woke_%d_want_1", n);
    PT(pthread_join(t[1], NULL));
    EXPECT(fw_rc[1] == 0, "bit1_waiter_returned_%ld_errno_%d", fw_rc[1], fw_errno[1]);
    sleep_ms(10);
    EXPECT(fw_rc[0] == NOT_RETURNED, "bit0_waiter_returned_%ld_errno_%d_on_a_bit1_wake", fw_rc[0], fw_errno[0]);
    /* Bits 2..31 match nobody. */
    EXPECT(futex(&fw_word, FUTEX_WAKE_BITSET_PRIVATE, INT_MAX, NULL, NULL, ~3) == 0, "non_matching_bitset_woke");
    step("wake_bit0");
    n = wake_until(&fw_word, FUTEX_WAKE_BITSET_PRIVATE, INT_MAX, 1, 1);
    EXPECT(n == 1, "bitset_1_woke_%d_want_1", n);
    PT(pthread_join(t[0], NULL));
    EXPECT(fw_rc[0] == 0, "bit0_waiter_returned_%ld_errno_%d", fw_rc[0], fw_errno[0]);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* the life and death of threads and processes */

static pthread_mutex_t eg_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t eg_c = PTHREAD_COND_INITIALIZER;
static volatile int eg_cond_waiting;

static void *t_eg_cond_wait(void *arg) {
    (void)arg;
    pthread_mutex_lock(&eg_m);
    eg_cond_waiting = 1;
    for (;;)
        pthread_cond_wait(&eg_c, &eg_m); /* never signalled */
    return NULL;
}

static void *t_eg_sleep(void *arg) {
    (void)arg;
    for (int i = 0; i < 400; i++)
        sleep_ms(10); /* 4 s at most, so nothing outlives a broken run for long */
    return NULL;
}

static void *t_eg_exit(void *arg) {
    (void)arg;
    /* Holding eg_m while eg_cond_waiting is set proves the waiter released it inside pthread_cond_wait. */
    for (;;) {
        pthread_mutex_lock(&eg_m);
        int w = eg_cond_waiting;
        pthread_mutex_unlock(&eg_m);
        if (w)
            break;
        sleep_ms(1);
    }
    step("exit_3");
    exit(3); /* exit_group: every thread goes, the main one included */
    return NULL;
}

/* exit() (exit_group) in one thread ends the whole process while the others are blocked: in pthread_cond_wait,
 * in nanosleep, and the main thread in pthread_join. */
static const char *c_exit_group_from_thread(void) {
    pid_t c = spawn();
    if (c == 0) {
        pthread_t a, b, e;
        if (pthread_create(&a, NULL, t_eg_cond_wait, NULL) || pthread_create(&b, NULL, t_eg_sleep, NULL) ||
            pthread_create(&e, NULL, t_eg_exit, NULL))
            _exit(20);
        pthread_join(a, NULL);
        _exit(21);
    }
    return expect_end(c, 0, 3);
}

static volatile int eg_blocked_in_futex;
static void *t_block_forever(void *arg) {
    (void)arg;
    static volatile int w = 0;
    add(&eg_blocked_in_futex, 1);
    for (;;)
        futex(&w, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    return NULL;
}

/* Returning from main (exit_group) ends the threads still blocked. */
static const char *c_exit_from_main_with_threads(void) {
    pid_t c = spawn();
    if (c == 0) {
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&t[i], NULL, t_block_forever, NULL))
                _exit(20);
        wait_value(&eg_blocked_in_futex, 2, 3000);
        sleep_ms(5);
        exit(4);
    }
    return expect_end(c, 0, 4);
}

static volatile pid_t alone_tid;
static volatile int alone_counter;

static void *t_sys_exit(void *arg) {
    (void)arg;
    alone_tid = my_tid();
    /* The raw exit system call ends this thread only (glibc's and musl's exit() and _exit() use exit_group). The
     * C library does not learn of it, so this thread is never joined (musl would unmap what it still lists). */
    syscall(SYS_exit, 0);
    return NULL;
}

static void *t_count(void *arg) {
    (void)arg;
    add(&alone_counter, 1);
    return NULL;
}

static const char *c_thread_sys_exit_alone(void) {
    pid_t c = spawn();
    if (c == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, t_sys_exit, NULL))
            _exit(20);
        long long end = now_ns() + 3000 * 1000000LL;
        while (!load((volatile int *)&alone_tid) && now_ns() < end)
            sleep_ms(1);
        if (!alone_tid)
            _exit(21);
        step("wait_thread_gone");
        if (!wait_thread_gone(alone_tid, 3000))
            _exit(22);
        /* The process goes on: it still has its main thread, which can start another. */
        step("after_exit");
        if (getpid() != my_tid())
            _exit(23);
        pthread_t u;
        if (pthread_create(&u, NULL, t_count, NULL) || pthread_join(u, NULL) || alone_counter != 1)
            _exit(24);
        exit(5);
    }
    return expect_end(c, 0, 5);
}

static pthread_key_t mpe_key;
static volatile int mpe_dtor_ran;

static void mpe_dtor(void *v) {
    (void)v;
    store(&mpe_dtor_ran, 1);
}

static void *t_outlive_main(void *arg) {
    pid_t pid = (pid_t)(intptr_t)arg;
    /* The main thread's TSD destructor runs inside its pthread_exit. */
    if (!wait_value(&mpe_dtor_ran, 1, 3000))
        exit(20);
    sleep_ms(100);
    if (getpid() != pid)
        exit(21);
    exit(7);
    return NULL;
}

/* pthread_exit in the main thread ends that thread only: the process lives on in the other thread, and its wait
 * status is what that thread's exit(7) says (were the process over with main, it would be 0). */
static const char *c_main_pthread_exit(void) {
    pid_t c = spawn();
    if (c == 0) {
        pthread_t t;
        if (pthread_key_create(&mpe_key, mpe_dtor) || pthread_setspecific(mpe_key, (void *)1))
            _exit(22);
        if (pthread_create(&t, NULL, t_outlive_main, (void *)(intptr_t)getpid()))
            _exit(23);
        pthread_exit(NULL);
    }
    return expect_end(c, 0, 7);
}

static void *t_null_write(void *arg) {
    (void)arg;
    null_write();
    return NULL;
}

/* A fault in one thread, with the default SIGSEGV action, kills the whole process. */
static const char *c_thread_segv_kills_process(void) {
    pid_t c = spawn();
    if (c == 0) {
        pthread_t t, s;
        if (pthread_create(&s, NULL, t_eg_sleep, NULL) || pthread_create(&t, NULL, t_null_write, NULL))
            _exit(20);
        pthread_join(t, NULL);
        _exit(21);
    }
    return expect_end(c, SIGSEGV, 0);
}

static void *t_raise(void *arg) {
    raise((int)(intptr_t)arg); /* raise() in a thread is tg_kill(getpid(), gettid(), sig) */
    return NULL;
}

/* A thread-directed signal whose default action terminates takes the whole process with it. */
static const char *c_thread_raise_kills_process(void) {
    pid_t c = spawn();
    if (c == 0) {
        pthread_t t, s;
        if (pthread_create(&s, NULL, t_eg_sleep, NULL) || pthread_create(&t, NULL, t_raise, (void *)SIGSEGV))
            _exit(20);
        pthread_join(t, NULL);
        _exit(21);
    }
    const char *why = expect_end(c, SIGSEGV, 0);
    if (why)
        return why;
    c = spawn();
    if (c == 0) {
        pthread_t t, s;
        if (pthread_create(&s, NULL, t_eg_sleep, NULL) || pthread_create(&t, NULL, t_raise, (void *)SIGUSR1))
            _exit(20);
        pthread_join(t, NULL);
        _exit(21);
    }
    return expect_end(c, SIGUSR1, 0);
}

static volatile pid_t fork_parent_pid, fork_thread_tid, fork_child;

static void *t_child_thread(void *arg) {
    (void)arg;
    return (void *)(intptr_t)(my_tid() != getpid());
}

static void *t_fork(void *arg) {
    (void)arg;
    fork_thread_tid = my_tid();
    pid_t c = spawn();
    if (c == 0) {
        /* The child is a copy of the forking thread alone: that thread is its main thread now. */
        if (getpid() != my_tid())
            _exit(10);
        if (getpid() == fork_parent_pid || getppid() != fork_parent_pid)
            _exit(11);
        /* The parent's threads do not exist here. */
        if (tg_kill(getpid(), fork_thread_tid, 0) != -1 || errno != ESRCH)
            _exit(12);
        pthread_t t;
        void *res = NULL;
        if (pthread_create(&t, NULL, t_child_thread, NULL) || pthread_join(t, &res) || res != (void *)1)
            _exit(13);
        /* With exactly one thread left, the exit of that thread (not exit_group) ends the process, with its
         * status; had another thread been copied, the process would go on (and this check time out). */
        syscall(SYS_exit, 42);
        _exit(14);
    }
    fork_child = c;
    return NULL;
}

static const char *c_fork_from_thread(void) {
    fork_parent_pid = getpid();
    pthread_t t;
    PT(pthread_create(&t, NULL, t_fork, NULL));
    PT(pthread_join(t, NULL));
    EXPECT(fork_child > 0, "fork_in_thread_failed");
    return expect_end(fork_child, 0, 42);
}

/* pthread_join relies on CLONE_CHILD_CLEARTID: the kernel zeroes the word (glibc: the thread's tid; musl: the
 * thread-list lock the exiting thread holds) and FUTEX_WAKEs it when the thread is gone. Once the thread is gone,
 * a join must therefore return (without the clear it would wait forever). */
static volatile pid_t ct_tid;
static void *t_ct(void *arg) {
    (void)arg;
    ct_tid = my_tid();
    return (void *)77;
}

static void *t_double_late(void *arg) {
    sleep_ms(2);
    return t_double(arg);
}

static const char *c_cleartid_join(void) {
    pthread_t t;
    PT(pthread_create(&t, NULL, t_ct, NULL));
    long long end = now_ns() + 3000 * 1000000LL;
    while (!load((volatile int *)&ct_tid) && now_ns() < end)
        sleep_ms(1);
    EXPECT(ct_tid, "thread_never_ran");
    step("wait_gone");
    EXPECT(wait_thread_gone(ct_tid, 3000), "thread_never_went_away");
    step("join_after_gone");
    void *res = NULL;
    PT(pthread_join(t, &res));
    EXPECT(res == (void *)77, "join_result=%p", res);
    /* And joins that wait for the exit: a thread that (most likely) exits while the joiner sleeps in the kernel. */
    for (int i = 0; i < 8; i++) {
        step("join_while_running");
        PT(pthread_create(&t, NULL, t_double_late, (void *)(intptr_t)i));
        PT(pthread_join(t, &res));
        EXPECT(res == (void *)(intptr_t)(2 * i), "join_%d_result=%p", i, res);
    }
    return NULL;
}

/* Threads that change memory while others use it, as they may on several cores at once: one thread keeps
 * storing a counter while the main thread forks over and over (each fork makes the page read-only and
 * copy-on-write: the writer's next store copies it, and the main thread must read the copy, not the page it
 * shared with the child) and another maps, fills, protects and unmaps memory. A core that kept a stale TLB
 * entry would show the main thread an old counter, or a stop flag that never changes. */
static volatile long pc_counter;
static volatile int pc_stop;
#define PC_STORES 100000

static void *t_pc_writer(void *arg) {
    (void)arg;
    for (long i = 1; i <= PC_STORES && !pc_stop; i++)
        __atomic_store_n(&pc_counter, i, __ATOMIC_SEQ_CST);
    __atomic_store_n(&pc_stop, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void *t_pc_mapper(void *arg) {
    (void)arg;
    long bad = 0;
    for (int i = 0; i < 200; i++) {
        unsigned char *p = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return (void *)-1;
        memset(p, i & 0xff, 4 * 4096);
        for (int j = 0; j < 4 * 4096; j += 512)
            bad += p[j] != (i & 0xff);
        mprotect(p, 4096, PROT_READ);
        bad += p[0] != (i & 0xff);
        munmap(p, 4 * 4096);
    }
    return (void *)bad;
}

static const char *c_parallel_memory_changes(void) {
    pthread_t w, m;
    PT(pthread_create(&w, NULL, t_pc_writer, NULL));
    PT(pthread_create(&m, NULL, t_pc_mapper, NULL));
    long last = 0, backwards = 0, forks = 0;
    while (!__atomic_load_n(&pc_stop, __ATOMIC_SEQ_CST)) {
        pid_t c = fork();
        if (c == 0)
            _exit(0);
        EXPECT(c > 0, "fork_errno=%d", errno);
        waitpid(c, NULL, 0);
        forks++;
        long v = __atomic_load_n(&pc_counter, __ATOMIC_SEQ_CST);
        backwards += v < last;
        last = v;
    }
    void *bad = NULL;
    PT(pthread_join(w, NULL));
    PT(pthread_join(m, &bad));
    EXPECT(backwards == 0, "counter_went_back_%ld_times_in_%ld_forks", backwards, forks);
    EXPECT(pc_counter == PC_STORES, "final_counter=%ld", pc_counter);
    EXPECT(bad == NULL, "mapper_saw_%ld_wrong_bytes", (long)bad);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* the list */

static const struct check checks[] = {
    {"create_join_retval", c_create_join},
    {"identity_gettid_getpid_self", c_identity},
    {"create_64_threads", c_create_64},
    {"detached_threads_go_away", c_detached},
    {"attr_stacksize", c_stacksize},
    {"mutex_normal_trylock_blocks", c_mutex_normal},
    {"mutex_recursive", c_mutex_recursive},
    {"mutex_errorcheck_edeadlk_eperm", c_mutex_errorcheck},
    {"mutex_contention_exact_sum", c_mutex_contention},
    {"cond_signal_wakes_waiter", c_cond_signal},
    {"cond_broadcast_wakes_all", c_cond_broadcast},
    {"cond_timedwait_realtime_etimedout", c_cond_timedwait_realtime},
    {"cond_timedwait_monotonic_etimedout", c_cond_timedwait_monotonic},
    {"cond_timedwait_signalled_in_time", c_cond_timedwait_signalled},
    {"cond_producer_consumer", c_producer_consumer},
    {"rwlock_readers_writers", c_rwlock},
    {"barrier_rounds_one_serial", c_barrier},
    {"once_runs_init_once", c_once},
    {"semaphore_wait_post_timedwait", c_semaphore},
    {"tls_per_thread", c_tls},
    {"tsd_keys_destructors", c_tsd},
    {"tgkill_tkill_to_thread", c_tgkill_thread},
    {"kill_process_directed_unblocked_thread", c_kill_process_directed},
    {"sigmask_and_pending_per_thread", c_sigmask_per_thread},
    {"futex_wait_value_mismatch_eagain", c_futex_wait_value_mismatch},
    {"futex_wait_relative_timeout", c_futex_wait_timeout},
    {"futex_wake_counts", c_futex_wake_counts},
    {"futex_shared_ops_private_memory", c_futex_shared_ops_private_memory},
    {"futex_errors", c_futex_errors},
    {"futex_requeue_moves_waiters", c_futex_requeue},
    {"futex_bitset_abs_timeout_and_match", c_futex_bitset},
    {"exit_group_from_thread", c_exit_group_from_thread},
    {"exit_from_main_ends_threads", c_exit_from_main_with_threads},
    {"thread_sys_exit_leaves_alone", c_thread_sys_exit_alone},
    {"main_pthread_exit_process_lives", c_main_pthread_exit},
    {"thread_segv_kills_process", c_thread_segv_kills_process},
    {"thread_raise_kills_process", c_thread_raise_kills_process},
    {"fork_from_thread_one_thread", c_fork_from_thread},
    {"cleartid_join", c_cleartid_join},
    {"parallel_memory_changes", c_parallel_memory_changes},
};

int main(int argc, char **argv) {
    return suite_main(argc, argv, checks, sizeof checks / sizeof checks[0]);
}
