/* Files, directories, descriptors, pipes and devices conformance suite for questv (tests/conformance.rs).
 *
 * One static binary, built unmodified with `musl-gcc -static -O2` and `gcc -static -O2` (glibc), that runs the same
 * way on Linux and on questv. Every check runs in its own forked child (its own process group), so a crash, a hang
 * or a stray signal in one check never stops the suite; the parent prints one line per check
 *
 *     RESULT filecheck name=<name> ok=1
 *     RESULT filecheck name=<name> ok=0 why=<detail-without-spaces>
 *
 * and at the end `RESULT conformance suite=files libc=<musl|glibc> passed=P failed=F`, exiting with F (capped at
 * 255). `files NAME...` runs only the checks whose names contain one of the NAMEs. A check process that hangs is
 * ended by its own alarm() (it kills the children it forked and reports where it was), the parent's bounded wait
 * being the last resort. The harness, shared with the other suites, is suite.h.
 *
 * System calls used: open, openat, creat, close, read, write, pread64, pwrite64, readv, writev, lseek, ftruncate,
 * truncate, fstat, stat, lstat, newfstatat, statx, getdents64, mkdir, mkdirat, rmdir, unlink, unlinkat, rename,
 * renameat, renameat2, link, linkat, symlink, symlinkat, readlink, readlinkat, chdir, fchdir, getcwd, access,
 * faccessat, chmod, fchmod, fchmodat, umask, utimensat, fsync, fdatasync, statfs, fstatfs, dup, dup2, dup3, fcntl
 * (F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL, F_SETFL), pipe, pipe2, ioctl(FIONREAD), poll, select,
 * getrlimit/setrlimit (RLIMIT_NOFILE), and fork, waitpid, kill, sigaction to drive them.
 *
 * Every check works in a directory of its own (in_dir: created under the suite's directory in /tmp, made the
 * current directory, removed afterwards; main() creates the suite's directory and removes whatever is left in it).
 * Nothing depends on /proc, on users other than root (everything runs as uid 0, so no permission-denial cases), on
 * FIFOs or device nodes the check makes itself, on sockets, O_TMPFILE or terminal behaviour (stdin and stdout may
 * be a serial console or a pipe). The expectations are Linux's documented behaviour (the manual pages, section 2
 * and 4; the harness's reference is Linux 6.1 with /tmp on tmpfs), with the error cases the manual pages give;
 * raw syscall() is used where a libc wrapper could hide the kernel's answer (or decide itself), and for the calls
 * musl 1.2.3 has no wrapper for (statx, renameat2, getdents64). Everything is deterministic: nothing depends on a
 * sleep being long enough, only on it being at least as long as asked. */
#define SUITE_NAME "files"
#define SUITE_CHECK "filecheck"
/* A check process ends itself (on_check_timeout, suite.h) after this long; the parent waits a little longer. */
#define CHECK_ALARM_S 9
#define PARENT_WAIT_MS 12000
#include "suite.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/uio.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE 1
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE 2
#endif
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif
#ifndef FIONREAD
#define FIONREAD 0x541B
#endif

/* A file descriptor nothing has open. */
#define NO_SUCH_FD 99

#define PG 4096UL

/* statx(2)'s structure, spelled out here: musl 1.2.3 has no statx. */
struct xstatx_ts {
    int64_t tv_sec;
    uint32_t tv_nsec;
    int32_t reserved;
};
struct xstatx {
    uint32_t stx_mask, stx_blksize;
    uint64_t stx_attributes;
    uint32_t stx_nlink, stx_uid, stx_gid;
    uint16_t stx_mode, pad1;
    uint64_t stx_ino, stx_size, stx_blocks, stx_attributes_mask;
    struct xstatx_ts stx_atime, stx_btime, stx_ctime, stx_mtime;
    uint32_t stx_rdev_major, stx_rdev_minor, stx_dev_major, stx_dev_minor;
    uint64_t spare[14];
};
#define X_STATX_TYPE 0x1U
#define X_STATX_MODE 0x2U
#define X_STATX_NLINK 0x4U
#define X_STATX_INO 0x100U
#define X_STATX_SIZE 0x200U
#define X_STATX_BASIC_STATS 0x7ffU

/* getdents64(2)'s record. */
struct xdirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* ------------------------------------------------------------------------------------------------------------- */
/* helpers of this suite (the harness is suite.h) */

/* `expr` (a system call or libc call returning -1 and setting errno) must fail with `err`. */
#define EXPECT_ERRNO(label, expr, err)                                                                               \
    do {                                                                                                             \
        errno = 0;                                                                                                   \
        long rc_ = (long)(expr);                                                                                     \
        int e_ = errno;                                                                                              \
        if (rc_ != -1 || e_ != (err))                                                                                \
            return fail("%s=%ld_errno=%d_want_-1_errno_%d", label, rc_, e_, err);                                    \
    } while (0)

/* `expr` must return `want`. */
#define EXPECT_RC(label, expr, want)                                                                                 \
    do {                                                                                                             \
        errno = 0;                                                                                                   \
        long rc_ = (long)(expr);                                                                                     \
        if (rc_ != (long)(want))                                                                                     \
            return fail("%s=%ld_errno=%d_want_%ld", label, rc_, errno, (long)(want));                                \
    } while (0)

/* `expr` must succeed (not return -1); its value goes into `var`. */
#define EXPECT_FD(var, label, expr)                                                                                  \
    do {                                                                                                             \
        errno = 0;                                                                                                   \
        (var) = (expr);                                                                                              \
        if ((var) == -1)                                                                                             \
            return fail("%s_errno=%d", label, errno);                                                                \
    } while (0)

#define EXPECT_END(pid, sig, code)                                                                                   \
    do {                                                                                                             \
        const char *why_ = expect_end(pid, sig, code);                                                               \
        if (why_)                                                                                                    \
            return why_;                                                                                             \
    } while (0)

/* The suite's own directory in /tmp (main), and the directory of the running check (in_dir). */
static char topdir[128];
static char checkdir[192];

/* Remove `path` and everything under it (lstat: symbolic links are removed, never followed). */
static void rm_tree(const char *path, int depth) {
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode) || depth > 16) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char sub[PATH_MAX];
            if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub) {
                rm_tree(sub, depth + 1);
                rewinddir(d); /* the directory changed under the stream: start over */
            }
        }
        closedir(d);
    }
    rmdir(path);
}

/* Run `body` in a new empty directory of its own (the current directory), removed afterwards. */
static const char *in_dir(const char *(*body)(void)) {
    snprintf(checkdir, sizeof checkdir, "%s/c-XXXXXX", topdir);
    if (!mkdtemp(checkdir))
        return fail("mkdtemp(%s)_errno=%d", checkdir, errno);
    if (chdir(checkdir) != 0)
        return fail("chdir(%s)_errno=%d", checkdir, errno);
    umask(022);
    const char *why = body();
    end_children();
    if (chdir(topdir) != 0 && why == NULL)
        why = fail("chdir_back_errno=%d", errno);
    rm_tree(checkdir, 0);
    return why;
}

/* A check that runs in a directory of its own: CHECK(c_x) { ... } defines c_x for the table. */
#define CHECK(fn)                                                                                                    \
    static const char *fn##_body(void);                                                                              \
    static const char *fn(void) {                                                                                    \
        return in_dir(fn##_body);                                                                                    \
    }                                                                                                                \
    static const char *fn##_body(void)

/* Create (or truncate) `path` holding `text`: 0, or -1 with errno set. */
static int put(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int e = errno;
    close(fd);
    if (w != (ssize_t)n) {
        errno = w < 0 ? e : EIO;
        return -1;
    }
    return 0;
}

/* The whole of `path` (at most `size` - 1 bytes) as a string in `buf`: its length, or -1 with errno set. */
static ssize_t get(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < size - 1) {
        ssize_t r = read(fd, buf + got, size - 1 - got);
        if (r < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = 0;
    close(fd);
    return (ssize_t)got;
}

/* `path` must hold exactly `text`. */
#define EXPECT_CONTENT(path, text)                                                                                   \
    do {                                                                                                             \
        char buf_[256];                                                                                              \
        ssize_t n_ = get(path, buf_, sizeof buf_);                                                                   \
        EXPECT(n_ >= 0, "read_%s_errno=%d", path, errno);                                                            \
        EXPECT(strcmp(buf_, text) == 0, "%s_holds_'%s'_want_'%s'", path, buf_, text);                                \
    } while (0)

/* st_mode of `path` (lstat), or 0 (errno set). */
static mode_t mode_of(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 ? st.st_mode : 0;
}

static long nlink_of(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 ? (long)st.st_nlink : -1;
}

static long long size_of(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static int fd_flags(int fd) {
    return fcntl(fd, F_GETFD);
}

/* A page shared with the children a check forks (zeroed), or NULL. */
static volatile int *shared_page(void) {
    void *p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : (volatile int *)p;
}

/* An address nothing is mapped at: a page mapped and unmapped again (0 if that failed). */
static uintptr_t hole(void) {
    void *p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || munmap(p, PG) != 0)
        return 0;
    return (uintptr_t)p;
}

static long raw_statx(int dirfd, const char *path, int flags, unsigned mask, struct xstatx *sx) {
    return syscall(SYS_statx, dirfd, path, flags, mask, sx);
}

static long raw_renameat2(int olddir, const char *oldpath, int newdir, const char *newpath, unsigned flags) {
    return syscall(SYS_renameat2, olddir, oldpath, newdir, newpath, flags);
}

/* ------------------------------------------------------------------------------------------------------------- */
/* open, openat, creat */

/* O_CREAT makes an empty regular file with the mode (less the umask); O_CREAT|O_EXCL on an existing name (even a
 * dangling symbolic link) fails with EEXIST; O_CREAT alone opens the existing file, keeping its contents. */
CHECK(c_open_creat_excl) {
    int fd;
    EXPECT_FD(fd, "open(O_CREAT|O_EXCL)", open("f", O_RDWR | O_CREAT | O_EXCL, 0640));
    struct stat st;
    EXPECT(fstat(fd, &st) == 0, "fstat_errno=%d", errno);
    EXPECT(S_ISREG(st.st_mode) && st.st_size == 0, "new_file_mode=%#o_size=%lld", (unsigned)st.st_mode,
           (long long)st.st_size);
    EXPECT((st.st_mode & 07777) == 0640, "new_file_permissions=%#o_want_0640", (unsigned)(st.st_mode & 07777));
    EXPECT_RC("write", write(fd, "hello", 5), 5);
    close(fd);
    EXPECT_ERRNO("open(existing,O_CREAT|O_EXCL)", open("f", O_RDWR | O_CREAT | O_EXCL, 0644), EEXIST);
    EXPECT(symlink("no-such-target", "dangling") == 0, "symlink_errno=%d", errno);
    EXPECT_ERRNO("open(dangling_symlink,O_CREAT|O_EXCL)", open("dangling", O_RDWR | O_CREAT | O_EXCL, 0644), EEXIST);
    EXPECT(mode_of("no-such-target") == 0, "O_EXCL_created_the_symlink's_target");
    EXPECT_FD(fd, "open(existing,O_CREAT)", open("f", O_RDWR | O_CREAT, 0600));
    close(fd);
    EXPECT_CONTENT("f", "hello");
    EXPECT((mode_of("f") & 07777) == 0640, "O_CREAT_on_existing_changed_mode_to_%#o", (unsigned)(mode_of("f") & 07777));
    return NULL;
}

/* creat() is open(O_CREAT|O_WRONLY|O_TRUNC): it empties an existing file and gives a write-only descriptor. */
CHECK(c_creat_truncates_write_only) {
    EXPECT(put("f", "0123456789") == 0, "put_errno=%d", errno);
    int fd;
    EXPECT_FD(fd, "creat", creat("f", 0644));
    EXPECT(size_of("f") == 0, "creat_left_size_%lld", size_of("f"));
    char c;
    EXPECT_ERRNO("read(creat_fd)", read(fd, &c, 1), EBADF);
    EXPECT((fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY, "creat_fd_access_mode=%#x", fcntl(fd, F_GETFL) & O_ACCMODE);
    EXPECT_RC("write", write(fd, "ab", 2), 2);
    close(fd);
    EXPECT_CONTENT("f", "ab");
    return NULL;
}

/* O_TRUNC empties an existing regular file opened for writing. */
CHECK(c_open_trunc) {
    EXPECT(put("f", "0123456789") == 0, "put_errno=%d", errno);
    int fd;
    EXPECT_FD(fd, "open(O_WRONLY)", open("f", O_WRONLY));
    EXPECT_RC("write", write(fd, "ab", 2), 2);
    close(fd);
    EXPECT_CONTENT("f", "ab23456789"); /* without O_TRUNC: overwritten in place */
    EXPECT_FD(fd, "open(O_RDWR|O_TRUNC)", open("f", O_RDWR | O_TRUNC));
    struct stat st;
    EXPECT(fstat(fd, &st) == 0 && st.st_size == 0, "size_after_O_TRUNC=%lld", (long long)st.st_size);
    char buf[4];
    EXPECT_RC("read_after_O_TRUNC", read(fd, buf, sizeof buf), 0);
    close(fd);
    return NULL;
}

/* With O_APPEND every write goes to the end of the file, whatever the offset was, and leaves the offset there;
 * reads still happen at the offset. On Linux pwrite() on an O_APPEND descriptor appends too (pwrite(2), BUGS). */
CHECK(c_open_append) {
    EXPECT(put("f", "abc") == 0, "put_errno=%d", errno);
    int fd;
    EXPECT_FD(fd, "open(O_RDWR|O_APPEND)", open("f", O_RDWR | O_APPEND));
    EXPECT_RC("lseek(0,SEEK_CUR)_after_open", lseek(fd, 0, SEEK_CUR), 0);
    EXPECT_RC("write", write(fd, "de", 2), 2);
    EXPECT_RC("offset_after_append", lseek(fd, 0, SEEK_CUR), 5);
    EXPECT_RC("lseek(0,SEEK_SET)", lseek(fd, 0, SEEK_SET), 0);
    char c;
    EXPECT_RC("read_at_0", read(fd, &c, 1), 1);
    EXPECT(c == 'a', "read_at_0_gave_%c", c);
    EXPECT_RC("write_after_lseek", write(fd, "f", 1), 1);
    EXPECT_RC("offset_after_second_append", lseek(fd, 0, SEEK_CUR), 6);
    EXPECT_RC("pwrite(offset_0)", pwrite(fd, "g", 1, 0), 1);
    close(fd);
    EXPECT_CONTENT("f", "abcdefg");
    return NULL;
}

/* O_DIRECTORY opens a directory, and fails with ENOTDIR on anything else. */
CHECK(c_open_directory) {
    EXPECT(put("f", "x") == 0, "put_errno=%d", errno);
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT_ERRNO("open(file,O_DIRECTORY)", open("f", O_RDONLY | O_DIRECTORY), ENOTDIR);
    int fd;
    EXPECT_FD(fd, "open(dir,O_DIRECTORY)", open("d", O_RDONLY | O_DIRECTORY));
    struct stat st;
    EXPECT(fstat(fd, &st) == 0 && S_ISDIR(st.st_mode), "fstat_of_directory_fd_mode=%#o", (unsigned)st.st_mode);
    close(fd);
    EXPECT_FD(fd, "open(.,O_DIRECTORY)", open(".", O_RDONLY | O_DIRECTORY));
    close(fd);
    return NULL;
}

/* O_NOFOLLOW on a symbolic link fails with ELOOP; links in earlier components are still followed. */
CHECK(c_open_nofollow) {
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("d/f", "x") == 0, "put_errno=%d", errno);
    EXPECT(symlink("d/f", "lf") == 0 && symlink("d", "ld") == 0, "symlink_errno=%d", errno);
    EXPECT_ERRNO("open(symlink,O_NOFOLLOW)", open("lf", O_RDONLY | O_NOFOLLOW), ELOOP);
    EXPECT_ERRNO("open(symlink,O_NOFOLLOW|O_CREAT)", open("lf", O_RDWR | O_CREAT | O_NOFOLLOW, 0644), ELOOP);
    int fd;
    EXPECT_FD(fd, "open(ld/f,O_NOFOLLOW)", open("ld/f", O_RDONLY | O_NOFOLLOW));
    close(fd);
    EXPECT_FD(fd, "open(symlink)", open("lf", O_RDONLY));
    close(fd);
    return NULL;
}

/* O_CLOEXEC sets FD_CLOEXEC (and only on that descriptor); the flag survives fork; F_SETFD clears it. */
CHECK(c_open_cloexec) {
    int a, b;
    EXPECT_FD(a, "open(O_CLOEXEC)", open("f", O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    EXPECT_FD(b, "open", open("f", O_RDWR));
    EXPECT(fd_flags(a) == FD_CLOEXEC, "F_GETFD_with_O_CLOEXEC=%d", fd_flags(a));
    EXPECT(fd_flags(b) == 0, "F_GETFD_without_O_CLOEXEC=%d", fd_flags(b));
    pid_t pid = spawn();
    EXPECT(pid >= 0, "fork_errno=%d", errno);
    if (pid == 0)
        _exit(fd_flags(a) == FD_CLOEXEC && fd_flags(b) == 0 ? 0 : 3);
    EXPECT_END(pid, 0, 0);
    EXPECT_RC("F_SETFD_0", fcntl(a, F_SETFD, 0), 0);
    EXPECT(fd_flags(a) == 0, "F_GETFD_after_clearing=%d", fd_flags(a));
    EXPECT_RC("F_SETFD_FD_CLOEXEC", fcntl(b, F_SETFD, FD_CLOEXEC), 0);
    EXPECT(fd_flags(b) == FD_CLOEXEC, "F_GETFD_after_setting=%d", fd_flags(b));
    return NULL;
}

/* A directory opened for writing fails with EISDIR. */
CHECK(c_open_dir_for_write) {
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT_ERRNO("open(dir,O_WRONLY)", open("d", O_WRONLY), EISDIR);
    EXPECT_ERRNO("open(dir,O_RDWR)", open("d", O_RDWR), EISDIR);
    EXPECT_ERRNO("open(.,O_RDWR)", open(".", O_RDWR), EISDIR);
    int fd;
    EXPECT_FD(fd, "open(dir,O_RDONLY)", open("d", O_RDONLY));
    char c;
    EXPECT_ERRNO("read(directory_fd)", read(fd, &c, 1), EISDIR);
    close(fd);
    return NULL;
}

/* Paths that do not lead anywhere: a missing name or directory (ENOENT, also with O_CREAT), a regular file used as
 * a directory (ENOTDIR), the empty path (ENOENT). */
CHECK(c_open_bad_paths) {
    EXPECT(put("f", "x") == 0, "put_errno=%d", errno);
    EXPECT_ERRNO("open(missing)", open("missing", O_RDONLY), ENOENT);
    EXPECT_ERRNO("open(missing/x,O_CREAT)", open("missing/x", O_RDWR | O_CREAT, 0644), ENOENT);
    EXPECT_ERRNO("open(f/x)", open("f/x", O_RDONLY), ENOTDIR);
    EXPECT_ERRNO("open(f/x,O_CREAT)", open("f/x", O_RDWR | O_CREAT, 0644), ENOTDIR);
    EXPECT_ERRNO("open(f/)", open("f/", O_RDONLY), ENOTDIR);
    EXPECT_ERRNO("open(empty)", open("", O_RDONLY), ENOENT);
    EXPECT_ERRNO("raw_open(empty)", syscall(SYS_open, "", O_RDONLY), ENOENT);
    EXPECT_ERRNO("raw_openat(empty)", syscall(SYS_openat, AT_FDCWD, "", O_RDONLY), ENOENT);
    return NULL;
}

/* A name component longer than NAME_MAX (255) fails with ENAMETOOLONG; 255 bytes are fine. */
CHECK(c_open_name_too_long) {
    char name[300];
    memset(name, 'n', 256);
    name[256] = 0;
    EXPECT_ERRNO("open(256_bytes,O_CREAT)", open(name, O_RDWR | O_CREAT, 0644), ENAMETOOLONG);
    EXPECT_ERRNO("open(256_bytes)", open(name, O_RDONLY), ENAMETOOLONG);
    EXPECT_ERRNO("mkdir(256_bytes)", mkdir(name, 0755), ENAMETOOLONG);
    name[255] = 0;
    int fd;
    EXPECT_FD(fd, "open(255_bytes,O_CREAT)", open(name, O_RDWR | O_CREAT, 0644));
    close(fd);
    EXPECT(unlink(name) == 0, "unlink(255_bytes)_errno=%d", errno);
    return NULL;
}

/* A path pointer into unmapped memory fails with EFAULT. */
CHECK(c_open_efault) {
    uintptr_t h = hole();
    EXPECT(h, "no_hole_errno=%d", errno);
    EXPECT_ERRNO("raw_open(bad_pointer)", syscall(SYS_open, h, O_RDONLY), EFAULT);
    EXPECT_ERRNO("raw_openat(bad_pointer)", syscall(SYS_openat, AT_FDCWD, h, O_RDWR | O_CREAT, 0644), EFAULT);
    EXPECT_ERRNO("raw_stat(bad_pointer)", syscall(SYS_stat, h, h), EFAULT);
    EXPECT_ERRNO("raw_mkdir(bad_pointer)", syscall(SYS_mkdir, h, 0755), EFAULT);
    return NULL;
}

/* openat: relative to a directory descriptor or AT_FDCWD; an absolute path ignores the descriptor; a relative
 * path with a descriptor that is not a directory fails with ENOTDIR, with a closed one EBADF. */
CHECK(c_openat_dirfd) {
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("d/f", "in-d") == 0 && put("f", "here") == 0, "put_errno=%d", errno);
    int dfd, fd;
    EXPECT_FD(dfd, "open(d)", open("d", O_RDONLY | O_DIRECTORY));
    char buf[16] = {0};
    EXPECT_FD(fd, "openat(d,f)", openat(dfd, "f", O_RDONLY));
    EXPECT_RC("read", read(fd, buf, sizeof buf - 1), 4);
    EXPECT(strcmp(buf, "in-d") == 0, "openat(d,f)_read_'%s'", buf);
    close(fd);
    EXPECT_FD(fd, "openat(d,new,O_CREAT)", openat(dfd, "new", O_RDWR | O_CREAT, 0644));
    close(fd);
    EXPECT(mode_of("d/new") != 0, "openat_O_CREAT_did_not_create_d/new");
    memset(buf, 0, sizeof buf);
    EXPECT_FD(fd, "openat(AT_FDCWD,f)", openat(AT_FDCWD, "f", O_RDONLY));
    EXPECT_RC("read", read(fd, buf, sizeof buf - 1), 4);
    EXPECT(strcmp(buf, "here") == 0, "openat(AT_FDCWD,f)_read_'%s'", buf);
    close(fd);
    char abs[PATH_MAX];
    snprintf(abs, sizeof abs, "%s/f", checkdir);
    EXPECT_FD(fd, "openat(d,absolute)", openat(dfd, abs, O_RDONLY));
    memset(buf, 0, sizeof buf);
    EXPECT_RC("read", read(fd, buf, sizeof buf - 1), 4);
    EXPECT(strcmp(buf, "here") == 0, "openat(d,absolute)_read_'%s'", buf);
    EXPECT_ERRNO("openat(file_fd,relative)", openat(fd, "x", O_RDONLY), ENOTDIR);
    close(fd);
    EXPECT_ERRNO("openat(closed_fd,relative)", openat(NO_SUCH_FD, "f", O_RDONLY), EBADF);
    close(dfd);
    return NULL;
}

/* open returns the lowest descriptor not open; close of a closed one fails with EBADF. */
CHECK(c_open_lowest_fd_close) {
    int a, b, c;
    EXPECT_FD(a, "open", open(".", O_RDONLY));
    EXPECT_FD(b, "open", open(".", O_RDONLY));
    EXPECT_FD(c, "open", open(".", O_RDONLY));
    EXPECT(b > a && c > b, "descriptors_%d_%d_%d_not_increasing", a, b, c);
    EXPECT_RC("close", close(b), 0);
    EXPECT_ERRNO("close(closed)", close(b), EBADF);
    EXPECT_ERRNO("close(-1)", close(-1), EBADF);
    int d;
    EXPECT_FD(d, "open", open(".", O_RDONLY));
    EXPECT(d == b, "open_after_close_gave_%d_want_lowest_%d", d, b);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* read, write, pread, pwrite, readv, writev, lseek, truncate */

CHECK(c_read_write_lseek) {
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR | O_CREAT, 0644));
    EXPECT_RC("write", write(fd, "hello, world", 12), 12);
    EXPECT_RC("write(0_bytes)", write(fd, "x", 0), 0);
    EXPECT_RC("lseek(0,SEEK_CUR)", lseek(fd, 0, SEEK_CUR), 12);
    EXPECT_RC("lseek(7,SEEK_SET)", lseek(fd, 7, SEEK_SET), 7);
    char buf[16] = {0};
    EXPECT_RC("read", read(fd, buf, 5), 5);
    EXPECT(memcmp(buf, "world", 5) == 0, "read_'%.5s'_want_world", buf);
    EXPECT_RC("read_at_end", read(fd, buf, 5), 0);
    EXPECT_RC("lseek(-5,SEEK_CUR)", lseek(fd, -5, SEEK_CUR), 7);
    EXPECT_RC("lseek(-12,SEEK_END)", lseek(fd, -12, SEEK_END), 0);
    EXPECT_RC("short_read", read(fd, buf, 16), 12);
    EXPECT(memcmp(buf, "hello, world", 12) == 0, "read_back_'%.12s'", buf);
    EXPECT_RC("read(0_bytes)", read(fd, buf, 0), 0);
    EXPECT_RC("lseek(100,SEEK_SET)_past_end", lseek(fd, 100, SEEK_SET), 100);
    EXPECT_RC("read_past_end", read(fd, buf, 4), 0);
    EXPECT(size_of("f") == 12, "seeking_past_the_end_changed_size_to_%lld", size_of("f"));
    EXPECT_RC("lseek(0,SEEK_END)", lseek(fd, 0, SEEK_END), 12);
    close(fd);
    return NULL;
}

/* lseek: a resulting offset below 0 and an unknown whence fail with EINVAL (the offset unchanged); a pipe cannot
 * seek (ESPIPE); a closed descriptor gives EBADF. */
CHECK(c_lseek_errors) {
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR | O_CREAT, 0644));
    EXPECT_RC("write", write(fd, "abcdef", 6), 6);
    EXPECT_RC("lseek(3)", lseek(fd, 3, SEEK_SET), 3);
    EXPECT_ERRNO("lseek(-1,SEEK_SET)", lseek(fd, -1, SEEK_SET), EINVAL);
    EXPECT_ERRNO("lseek(-4,SEEK_CUR)", lseek(fd, -4, SEEK_CUR), EINVAL);
    EXPECT_ERRNO("lseek(-7,SEEK_END)", lseek(fd, -7, SEEK_END), EINVAL);
    EXPECT_ERRNO("lseek(whence_77)", syscall(SYS_lseek, fd, 0, 77), EINVAL);
    EXPECT_RC("offset_after_failed_lseeks", lseek(fd, 0, SEEK_CUR), 3);
    close(fd);
    EXPECT_ERRNO("lseek(closed)", lseek(fd, 0, SEEK_SET), EBADF);
    int p[2];
    EXPECT(pipe(p) == 0, "pipe_errno=%d", errno);
    EXPECT_ERRNO("lseek(pipe_read_end)", lseek(p[0], 0, SEEK_CUR), ESPIPE);
    EXPECT_ERRNO("lseek(pipe_write_end)", lseek(p[1], 0, SEEK_SET), ESPIPE);
    return NULL;
}

/* Writing past the end leaves a hole that reads as zeros and counts in the size. */
CHECK(c_holes_read_zero) {
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR | O_CREAT, 0644));
    EXPECT_RC("write", write(fd, "ab", 2), 2);
    EXPECT_RC("lseek(10000)", lseek(fd, 10000, SEEK_SET), 10000);
    EXPECT_RC("write_after_hole", write(fd, "cd", 2), 2);
    EXPECT(size_of("f") == 10002, "size=%lld_want_10002", size_of("f"));
    EXPECT_RC("pwrite(20000)", pwrite(fd, "e", 1, 20000), 1);
    EXPECT(size_of("f") == 20001, "size_after_pwrite=%lld_want_20001", size_of("f"));
    static char buf[20001];
    memset(buf, 0x55, sizeof buf);
    EXPECT_RC("pread_all", pread(fd, buf, sizeof buf, 0), 20001);
    EXPECT(buf[0] == 'a' && buf[1] == 'b' && buf[10000] == 'c' && buf[10001] == 'd' && buf[20000] == 'e',
           "data_around_holes_wrong");
    for (int i = 2; i < 20000; i++)
        if (i != 10000 && i != 10001)
            EXPECT(buf[i] == 0, "hole_byte_%d=%#x_want_0", i, (unsigned char)buf[i]);
    close(fd);
    return NULL;
}

/* pread/pwrite use the given offset and leave the file offset alone; a negative offset is EINVAL; a pipe ESPIPE. */
CHECK(c_pread_pwrite) {
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR | O_CREAT, 0644));
    EXPECT_RC("write", write(fd, "0123456789", 10), 10);
    EXPECT_RC("lseek(2)", lseek(fd, 2, SEEK_SET), 2);
    char buf[8] = {0};
    EXPECT_RC("pread(6)", pread(fd, buf, 3, 6), 3);
    EXPECT(memcmp(buf, "678", 3) == 0, "pread_'%.3s'_want_678", buf);
    EXPECT_RC("offset_after_pread", lseek(fd, 0, SEEK_CUR), 2);
    EXPECT_RC("pwrite(4)", pwrite(fd, "ab", 2, 4), 2);
    EXPECT_RC("offset_after_pwrite", lseek(fd, 0, SEEK_CUR), 2);
    EXPECT_RC("pread_at_end", pread(fd, buf, 3, 10), 0);
    EXPECT_RC("pread_short", pread(fd, buf, 8, 8), 2);
    EXPECT_ERRNO("pread(negative)", pread(fd, buf, 1, -1), EINVAL);
    EXPECT_ERRNO("pwrite(negative)", pwrite(fd, buf, 1, -1), EINVAL);
    close(fd);
    EXPECT_CONTENT("f", "0123ab6789");
    int p[2];
    EXPECT(pipe(p) == 0, "pipe_errno=%d", errno);
    EXPECT_ERRNO("pwrite(pipe)", pwrite(p[1], "x", 1, 0), ESPIPE);
    EXPECT_ERRNO("pread(pipe)", pread(p[0], buf, 1, 0), ESPIPE);
    return NULL;
}

/* writev writes the buffers in order as one run; readv fills them in order and stops short at the end. */
CHECK(c_readv_writev) {
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR | O_CREAT, 0644));
    char a[] = "one,", b[] = "", c[] = "two,three";
    struct iovec w[3] = {{a, 4}, {b, 0}, {c, 9}};
    EXPECT_RC("writev", writev(fd, w, 3), 13);
    EXPECT_RC("lseek", lseek(fd, 0, SEEK_SET), 0);
    char x[3], y[5], z[10];
    memset(z, 0, sizeof z);
    struct iovec r[3] = {{x, 3}, {y, 5}, {z, 10}};
    EXPECT_RC("readv", readv(fd, r, 3), 13);
    EXPECT(memcmp(x, "one", 3) == 0 && memcmp(y, ",two,", 5) == 0 && memcmp(z, "three", 5) == 0,
           "readv_split_'%.3s'_'%.5s'_'%.5s'", x, y, z);
    EXPECT_RC("readv_at_end", readv(fd, r, 3), 0);
    close(fd);
    EXPECT_CONTENT("f", "one,two,three");
    return NULL;
}

/* ftruncate and truncate shrink a file (the rest is gone) and grow it (with zeros); the offset is not moved; a
 * descriptor not open for writing gives EINVAL, a negative length EINVAL, a directory EISDIR. */
CHECK(c_truncate_grow_shrink) {
    EXPECT(put("f", "0123456789") == 0, "put_errno=%d", errno);
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR));
    EXPECT_RC("lseek(8)", lseek(fd, 8, SEEK_SET), 8);
    EXPECT_RC("ftruncate(4)", ftruncate(fd, 4), 0);
    EXPECT(size_of("f") == 4, "size_after_ftruncate(4)=%lld", size_of("f"));
    EXPECT_RC("offset_after_ftruncate", lseek(fd, 0, SEEK_CUR), 8);
    EXPECT_RC("ftruncate(8)", ftruncate(fd, 8), 0);
    char buf[16];
    memset(buf, 0x55, sizeof buf);
    EXPECT_RC("pread", pread(fd, buf, sizeof buf, 0), 8);
    EXPECT(memcmp(buf, "0123\0\0\0\0", 8) == 0, "grown_file_not_zero_filled_(%#x)", (unsigned char)buf[4]);
    EXPECT_RC("truncate(path,2)", truncate("f", 2), 0);
    EXPECT(size_of("f") == 2, "size_after_truncate(2)=%lld", size_of("f"));
    EXPECT_RC("truncate(path,3000)", truncate("f", 3000), 0);
    EXPECT(size_of("f") == 3000, "size_after_truncate(3000)=%lld", size_of("f"));
    EXPECT_ERRNO("ftruncate(negative)", ftruncate(fd, -1), EINVAL);
    EXPECT_ERRNO("truncate(negative)", truncate("f", -1), EINVAL);
    close(fd);
    EXPECT_FD(fd, "open(O_RDONLY)", open("f", O_RDONLY));
    EXPECT_ERRNO("ftruncate(read_only_fd)", ftruncate(fd, 0), EINVAL);
    close(fd);
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT_ERRNO("truncate(directory)", truncate("d", 0), EISDIR);
    EXPECT_ERRNO("truncate(missing)", truncate("missing", 0), ENOENT);
    return NULL;
}

/* read and write on a closed descriptor, write on a read-only one and read on a write-only one: EBADF. */
CHECK(c_ebadf) {
    EXPECT(put("f", "abc") == 0, "put_errno=%d", errno);
    char c;
    int fd;
    EXPECT_FD(fd, "open(O_RDONLY)", open("f", O_RDONLY));
    EXPECT_ERRNO("write(read_only_fd)", write(fd, "x", 1), EBADF);
    EXPECT_ERRNO("pwrite(read_only_fd)", pwrite(fd, "x", 1, 0), EBADF);
    close(fd);
    EXPECT_ERRNO("read(closed_fd)", read(fd, &c, 1), EBADF);
    EXPECT_ERRNO("write(closed_fd)", write(fd, "x", 1), EBADF);
    EXPECT_ERRNO("fstat(closed_fd)", syscall(SYS_fstat, fd, &c), EBADF);
    EXPECT_FD(fd, "open(O_WRONLY)", open("f", O_WRONLY));
    EXPECT_ERRNO("read(write_only_fd)", read(fd, &c, 1), EBADF);
    EXPECT_ERRNO("pread(write_only_fd)", pread(fd, &c, 1, 0), EBADF);
    close(fd);
    EXPECT_CONTENT("f", "abc");
    return NULL;
}

/* A larger file (256 KiB plus a bit, written in odd-sized pieces) reads back exactly. */
CHECK(c_large_file_roundtrip) {
    const size_t total = 256 * 1024 + 777;
    static unsigned char w[256 * 1024 + 777], r[256 * 1024 + 777];
    for (size_t i = 0; i < total; i++)
        w[i] = (unsigned char)(i * 131 + (i >> 9));
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR | O_CREAT, 0644));
    for (size_t off = 0; off < total;) {
        size_t n = total - off < 3001 ? total - off : 3001;
        ssize_t k = write(fd, w + off, n);
        EXPECT(k > 0, "write_at_%zu=%zd_errno=%d", off, k, errno);
        off += (size_t)k;
    }
    EXPECT_RC("lseek(0,SEEK_END)", lseek(fd, 0, SEEK_END), (long)total);
    EXPECT_RC("lseek(0)", lseek(fd, 0, SEEK_SET), 0);
    size_t got = 0;
    while (got < total) {
        ssize_t k = read(fd, r + got, 5000);
        EXPECT(k > 0, "read_at_%zu=%zd_errno=%d", got, k, errno);
        got += (size_t)k;
    }
    EXPECT(memcmp(w, r, total) == 0, "large_file_read_back_differs");
    close(fd);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* the list */

static const struct check checks[] = {
    /* open */
    {"open_creat_excl", c_open_creat_excl},
    {"creat_truncates_write_only", c_creat_truncates_write_only},
    {"open_trunc", c_open_trunc},
    {"open_append", c_open_append},
    {"open_directory", c_open_directory},
    {"open_nofollow", c_open_nofollow},
    {"open_cloexec", c_open_cloexec},
    {"open_dir_for_write_eisdir", c_open_dir_for_write},
    {"open_bad_paths", c_open_bad_paths},
    {"open_name_too_long", c_open_name_too_long},
    {"open_efault", c_open_efault},
    {"openat_dirfd", c_openat_dirfd},
    {"open_lowest_fd_close", c_open_lowest_fd_close},
    /* read, write */
    {"read_write_lseek", c_read_write_lseek},
    {"lseek_errors", c_lseek_errors},
    {"holes_read_zero", c_holes_read_zero},
    {"pread_pwrite", c_pread_pwrite},
    {"readv_writev", c_readv_writev},
    {"truncate_grow_shrink", c_truncate_grow_shrink},
    {"ebadf", c_ebadf},
    {"large_file_roundtrip", c_large_file_roundtrip},
};

int main(int argc, char **argv) {
    snprintf(topdir, sizeof topdir, "/tmp/filecheck-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(topdir)) {
        printf("RESULT conformance suite=" SUITE_NAME " libc=%s passed=0 failed=1 why=no_directory_in_tmp_errno=%d\n",
               LIBC_NAME, errno);
        return 1;
    }
    int r = suite_main(argc, argv, checks, sizeof checks / sizeof checks[0]);
    if (chdir("/") == 0)
        rm_tree(topdir, 0);
    return r;
}
