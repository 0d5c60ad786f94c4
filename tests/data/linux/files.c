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
 * Every check works in a directory of its own (in_dir: created under the suite's directory in /tmp, made the current
 * directory, removed afterwards; main() creates the suite's directory and removes whatever is left in it). Nothing
 * depends on /proc, on users other than root (everything runs as uid 0, so no permission-denial cases), on mknod
 * (FIFOs, device nodes: only the standard /dev/null, zero, full and urandom are used), on sockets, O_TMPFILE or
 * terminal behaviour (stdin and stdout may be a serial console or a pipe). The expectations are Linux's documented
 * behaviour (the manual pages, section 2 and 4; the harness's reference is Linux 6.1 with /tmp on tmpfs), with the
 * error cases the manual pages give; raw syscall() is used where a libc wrapper could hide the kernel's answer (or
 * decide itself), for statx and renameat2 (musl 1.2.3 wraps neither) and for getdents64's raw records. Everything is
 * deterministic: nothing depends on a sleep being long enough, only on it being at least as long as asked. */
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
#include <sys/sysmacros.h>
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

/* Buffers in unmapped memory: read, write and stat fail with EFAULT (a file and a pipe), and nothing is written. */
CHECK(c_rw_efault) {
    uintptr_t h = hole();
    EXPECT(h, "no_hole_errno=%d", errno);
    EXPECT(put("f", "abc") == 0, "put_errno=%d", errno);
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR));
    EXPECT_ERRNO("read(file,bad_buffer)", syscall(SYS_read, fd, h, 3), EFAULT);
    EXPECT_ERRNO("write(file,bad_buffer)", syscall(SYS_write, fd, h, 3), EFAULT);
    EXPECT_ERRNO("fstat(bad_buffer)", syscall(SYS_fstat, fd, h), EFAULT);
    EXPECT_ERRNO("newfstatat(bad_buffer)", syscall(SYS_newfstatat, AT_FDCWD, "f", h, 0), EFAULT);
    close(fd);
    EXPECT_CONTENT("f", "abc");
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    EXPECT_ERRNO("write(pipe,bad_buffer)", syscall(SYS_write, p[1], h, 3), EFAULT);
    int n = -1;
    EXPECT(ioctl(p[0], FIONREAD, &n) == 0 && n == 0, "failed_write_left_%d_bytes_in_the_pipe", n);
    EXPECT_RC("write(pipe)", write(p[1], "xyz", 3), 3);
    EXPECT_ERRNO("read(pipe,bad_buffer)", syscall(SYS_read, p[0], h, 3), EFAULT);
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
/* stat, lstat, newfstatat, statx */

/* The type bits and sizes: a regular file, a directory, a symbolic link (lstat: its size is the target's length;
 * stat follows it); fstat agrees with stat. */
CHECK(c_stat_types_sizes) {
    EXPECT(put("f", "12345") == 0, "put_errno=%d", errno);
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(symlink("f", "l") == 0, "symlink_errno=%d", errno);
    struct stat st, fst, lst;
    EXPECT(stat("f", &st) == 0, "stat(f)_errno=%d", errno);
    EXPECT(S_ISREG(st.st_mode) && st.st_size == 5 && st.st_nlink == 1, "stat(f)_mode=%#o_size=%lld_nlink=%ld",
           (unsigned)st.st_mode, (long long)st.st_size, (long)st.st_nlink);
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDONLY));
    EXPECT(fstat(fd, &fst) == 0, "fstat_errno=%d", errno);
    close(fd);
    EXPECT(fst.st_ino == st.st_ino && fst.st_dev == st.st_dev && fst.st_mode == st.st_mode && fst.st_size == 5,
           "fstat_disagrees_with_stat");
    EXPECT(stat("d", &st) == 0 && S_ISDIR(st.st_mode), "stat(d)_mode=%#o_errno=%d", (unsigned)st.st_mode, errno);
    EXPECT(lstat("l", &lst) == 0, "lstat(l)_errno=%d", errno);
    EXPECT(S_ISLNK(lst.st_mode) && lst.st_size == 1, "lstat(l)_mode=%#o_size=%lld_want_link_of_size_1",
           (unsigned)lst.st_mode, (long long)lst.st_size);
    EXPECT(stat("l", &st) == 0 && S_ISREG(st.st_mode) && st.st_ino == fst.st_ino, "stat(l)_does_not_follow");
    EXPECT(lst.st_ino != fst.st_ino, "symlink_has_its_target's_inode");
    EXPECT(lstat("f", &st) == 0 && S_ISREG(st.st_mode), "lstat(regular)_mode=%#o", (unsigned)st.st_mode);
    EXPECT_ERRNO("stat(missing)", stat("missing", &st), ENOENT);
    EXPECT_ERRNO("lstat(f/x)", lstat("f/x", &st), ENOTDIR);
    return NULL;
}

/* newfstatat: relative to a directory descriptor; AT_SYMLINK_NOFOLLOW gives the link itself; AT_EMPTY_PATH with
 * "" gives the descriptor's own file; "" without AT_EMPTY_PATH fails with ENOENT; an unknown flag EINVAL. */
CHECK(c_newfstatat_flags) {
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("d/f", "abc") == 0, "put_errno=%d", errno);
    EXPECT(symlink("f", "d/l") == 0, "symlink_errno=%d", errno);
    int dfd, fd;
    EXPECT_FD(dfd, "open(d)", open("d", O_RDONLY | O_DIRECTORY));
    struct stat st;
    EXPECT_RC("newfstatat(d,f)", syscall(SYS_newfstatat, dfd, "f", &st, 0), 0);
    EXPECT(S_ISREG(st.st_mode) && st.st_size == 3, "newfstatat(d,f)_mode=%#o_size=%lld", (unsigned)st.st_mode,
           (long long)st.st_size);
    ino_t file_ino = st.st_ino;
    EXPECT_RC("newfstatat(d,l)", syscall(SYS_newfstatat, dfd, "l", &st, 0), 0);
    EXPECT(S_ISREG(st.st_mode) && st.st_ino == file_ino, "newfstatat(d,l)_did_not_follow_mode=%#o",
           (unsigned)st.st_mode);
    EXPECT_RC("newfstatat(d,l,NOFOLLOW)", syscall(SYS_newfstatat, dfd, "l", &st, AT_SYMLINK_NOFOLLOW), 0);
    EXPECT(S_ISLNK(st.st_mode), "newfstatat(AT_SYMLINK_NOFOLLOW)_mode=%#o", (unsigned)st.st_mode);
    EXPECT_FD(fd, "openat(d,f)", openat(dfd, "f", O_RDONLY));
    EXPECT_RC("newfstatat(fd,\"\",AT_EMPTY_PATH)", syscall(SYS_newfstatat, fd, "", &st, AT_EMPTY_PATH), 0);
    EXPECT(S_ISREG(st.st_mode) && st.st_ino == file_ino, "AT_EMPTY_PATH_gave_mode=%#o", (unsigned)st.st_mode);
    EXPECT_RC("newfstatat(dfd,\"\",AT_EMPTY_PATH)", syscall(SYS_newfstatat, dfd, "", &st, AT_EMPTY_PATH), 0);
    EXPECT(S_ISDIR(st.st_mode), "AT_EMPTY_PATH_on_directory_gave_mode=%#o", (unsigned)st.st_mode);
    EXPECT_ERRNO("newfstatat(fd,\"\",0)", syscall(SYS_newfstatat, fd, "", &st, 0), ENOENT);
    EXPECT_ERRNO("newfstatat(bad_flag)", syscall(SYS_newfstatat, dfd, "f", &st, 0x40000000), EINVAL);
    EXPECT_ERRNO("newfstatat(file_fd,relative)", syscall(SYS_newfstatat, fd, "x", &st, 0), ENOTDIR);
    close(fd);
    close(dfd);
    return NULL;
}

/* statx: the basic fields it says it filled agree with stat; AT_SYMLINK_NOFOLLOW and AT_EMPTY_PATH work. */
CHECK(c_statx_basics) {
    EXPECT(put("f", "statx!") == 0, "put_errno=%d", errno);
    EXPECT(mkdir("d", 0700) == 0, "mkdir_errno=%d", errno);
    EXPECT(symlink("f", "l") == 0, "symlink_errno=%d", errno);
    struct xstatx sx;
    struct stat st;
    EXPECT(stat("f", &st) == 0, "stat_errno=%d", errno);
    memset(&sx, 0xff, sizeof sx);
    EXPECT_RC("statx(f)", raw_statx(AT_FDCWD, "f", 0, X_STATX_BASIC_STATS, &sx), 0);
    unsigned need = X_STATX_TYPE | X_STATX_MODE | X_STATX_NLINK | X_STATX_INO | X_STATX_SIZE;
    EXPECT((sx.stx_mask & need) == need, "stx_mask=%#x_lacks_%#x", sx.stx_mask, need);
    EXPECT(S_ISREG(sx.stx_mode) && (sx.stx_mode & 07777) == 0644, "stx_mode=%#o", (unsigned)sx.stx_mode);
    EXPECT(sx.stx_size == 6 && sx.stx_nlink == 1, "stx_size=%llu_stx_nlink=%u", (unsigned long long)sx.stx_size,
           sx.stx_nlink);
    EXPECT(sx.stx_ino == (uint64_t)st.st_ino, "stx_ino=%llu_st_ino=%llu", (unsigned long long)sx.stx_ino,
           (unsigned long long)st.st_ino);
    EXPECT_RC("statx(d)", raw_statx(AT_FDCWD, "d", 0, X_STATX_BASIC_STATS, &sx), 0);
    EXPECT(S_ISDIR(sx.stx_mode) && (sx.stx_mode & 07777) == 0700 && sx.stx_nlink == 2, "statx(d)_mode=%#o_nlink=%u",
           (unsigned)sx.stx_mode, sx.stx_nlink);
    EXPECT_RC("statx(l,NOFOLLOW)", raw_statx(AT_FDCWD, "l", AT_SYMLINK_NOFOLLOW, X_STATX_BASIC_STATS, &sx), 0);
    EXPECT(S_ISLNK(sx.stx_mode) && sx.stx_size == 1, "statx(l,NOFOLLOW)_mode=%#o_size=%llu", (unsigned)sx.stx_mode,
           (unsigned long long)sx.stx_size);
    EXPECT_RC("statx(l)", raw_statx(AT_FDCWD, "l", 0, X_STATX_BASIC_STATS, &sx), 0);
    EXPECT(S_ISREG(sx.stx_mode) && sx.stx_size == 6, "statx(l)_did_not_follow_mode=%#o", (unsigned)sx.stx_mode);
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDONLY));
    EXPECT_RC("statx(fd,\"\",AT_EMPTY_PATH)", raw_statx(fd, "", AT_EMPTY_PATH, X_STATX_BASIC_STATS, &sx), 0);
    EXPECT(S_ISREG(sx.stx_mode) && sx.stx_size == 6, "statx(AT_EMPTY_PATH)_mode=%#o", (unsigned)sx.stx_mode);
    close(fd);
    EXPECT_ERRNO("statx(missing)", raw_statx(AT_FDCWD, "missing", 0, X_STATX_BASIC_STATS, &sx), ENOENT);
    return NULL;
}

/* statx refuses the reserved mask bit (STATX__RESERVED, 0x80000000), an unknown flag, and AT_STATX_FORCE_SYNC
 * with AT_STATX_DONT_SYNC at once (EINVAL); a bad buffer pointer EFAULT. */
CHECK(c_statx_errors) {
    EXPECT(put("f", "x") == 0, "put_errno=%d", errno);
    struct xstatx sx;
    EXPECT_ERRNO("statx(mask_bit_31)", raw_statx(AT_FDCWD, "f", 0, 0x80000000U, &sx), EINVAL);
    EXPECT_ERRNO("statx(flag_0x40000000)", raw_statx(AT_FDCWD, "f", 0x40000000, X_STATX_BASIC_STATS, &sx), EINVAL);
    EXPECT_ERRNO("statx(FORCE_SYNC|DONT_SYNC)", raw_statx(AT_FDCWD, "f", 0x6000, X_STATX_BASIC_STATS, &sx), EINVAL);
    uintptr_t h = hole();
    EXPECT(h, "no_hole_errno=%d", errno);
    EXPECT_ERRNO("statx(bad_buffer)", syscall(SYS_statx, AT_FDCWD, "f", 0, X_STATX_BASIC_STATS, h), EFAULT);
    return NULL;
}

/* A directory's link count is 2 (its name and its ".") plus one per subdirectory (their ".."); files do not
 * count. "." is the directory itself and a subdirectory's ".." its parent. */
CHECK(c_dir_nlink) {
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(nlink_of("d") == 2, "new_dir_nlink=%ld_want_2", nlink_of("d"));
    EXPECT(mkdir("d/a", 0755) == 0 && mkdir("d/b", 0755) == 0, "mkdir_sub_errno=%d", errno);
    EXPECT(put("d/f", "x") == 0, "put_errno=%d", errno);
    EXPECT(nlink_of("d") == 4, "nlink_with_2_subdirs_and_a_file=%ld_want_4", nlink_of("d"));
    EXPECT(rmdir("d/a") == 0, "rmdir_errno=%d", errno);
    EXPECT(nlink_of("d") == 3, "nlink_after_rmdir=%ld_want_3", nlink_of("d"));
    struct stat d, dot, dotdot;
    EXPECT(stat("d", &d) == 0 && stat("d/.", &dot) == 0 && stat("d/b/..", &dotdot) == 0, "stat_errno=%d", errno);
    EXPECT(dot.st_ino == d.st_ino && dotdot.st_ino == d.st_ino, "d/._or_d/b/.._is_not_d");
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* directories: getdents64, mkdir, rmdir, unlink */

/* The names in directory `path` (readdir) with each one's d_type after a colon ("name:type"), sorted (strcmp)
 * into one comma-separated string. */
static const char *list_dir(const char *path, char *out, size_t size) {
    DIR *d = opendir(path);
    if (!d)
        return fail("opendir(%s)_errno=%d", path, errno);
    char names[64][64];
    int n = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL && n < 64) {
        snprintf(names[n], sizeof names[n], "%.40s:%d", e->d_name, e->d_type);
        n++;
    }
    int err = errno;
    closedir(d);
    if (err)
        return fail("readdir(%s)_errno=%d", path, err);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char t[64];
                memcpy(t, names[i], sizeof t);
                memcpy(names[i], names[j], sizeof t);
                memcpy(names[j], t, sizeof t);
            }
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, size - l, "%s%s", i ? "," : "", names[i]);
    }
    return NULL;
}

/* readdir lists ".", ".." and every name once, with its type; a removed name is gone from a new listing. */
CHECK(c_readdir_entries) {
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("d/file", "x") == 0, "put_errno=%d", errno);
    EXPECT(mkdir("d/sub", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(symlink("file", "d/link") == 0, "symlink_errno=%d", errno);
    char got[1024], want[256];
    const char *why = list_dir("d", got, sizeof got);
    if (why)
        return why;
    snprintf(want, sizeof want, "..:%d,.:%d,file:%d,link:%d,sub:%d", DT_DIR, DT_DIR, DT_REG, DT_LNK, DT_DIR);
    EXPECT(strcmp(got, want) == 0, "listing_%s_want_%s", got, want);
    EXPECT(unlink("d/file") == 0, "unlink_errno=%d", errno);
    EXPECT(rmdir("d/sub") == 0, "rmdir_errno=%d", errno);
    why = list_dir("d", got, sizeof got);
    if (why)
        return why;
    snprintf(want, sizeof want, "..:%d,.:%d,link:%d", DT_DIR, DT_DIR, DT_LNK);
    EXPECT(strcmp(got, want) == 0, "listing_after_removal_%s_want_%s", got, want);
    return NULL;
}

/* 300 names with raw getdents64 calls into a small buffer: every name exactly once, then 0 at the end; the inode
 * numbers match stat. A buffer too small for one entry gives EINVAL; a regular file ENOTDIR. */
CHECK(c_getdents64_many) {
    enum { N = 300 };
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "entry-%03d", i);
        EXPECT(put(name, "") == 0, "put(%s)_errno=%d", name, errno);
    }
    int fd;
    EXPECT_FD(fd, "open(.)", open(".", O_RDONLY | O_DIRECTORY));
    static char seen[N];
    int dots = 0, calls = 0;
    for (;;) {
        _Alignas(8) char buf[512];
        long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
        EXPECT(n >= 0, "getdents64_errno=%d", errno);
        if (n == 0)
            break;
        EXPECT(++calls < 1000, "getdents64_never_ends");
        for (long off = 0; off < n;) {
            struct xdirent64 *e = (struct xdirent64 *)(buf + off);
            EXPECT(e->d_reclen > 0 && off + e->d_reclen <= n, "bad_d_reclen_%u", e->d_reclen);
            off += e->d_reclen;
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
                dots++;
                continue;
            }
            int k = -1;
            EXPECT(sscanf(e->d_name, "entry-%d", &k) == 1 && k >= 0 && k < N, "unexpected_name_%s", e->d_name);
            EXPECT(!seen[k], "name_%s_listed_twice", e->d_name);
            seen[k] = 1;
            struct stat st;
            EXPECT(lstat(e->d_name, &st) == 0 && (uint64_t)st.st_ino == e->d_ino, "d_ino_of_%s_differs_from_stat",
                   e->d_name);
            EXPECT(e->d_type == DT_REG, "d_type_of_%s=%d", e->d_name, e->d_type);
        }
    }
    EXPECT(dots == 2, "saw_%d_dot_entries", dots);
    for (int i = 0; i < N; i++)
        EXPECT(seen[i], "entry-%03d_not_listed", i);
    EXPECT_RC("getdents64_after_end", syscall(SYS_getdents64, fd, name, sizeof name), 0);
    EXPECT_RC("lseek(dir,0)", lseek(fd, 0, SEEK_SET), 0);
    _Alignas(8) char tiny[8];
    EXPECT_ERRNO("getdents64(8_byte_buffer)", syscall(SYS_getdents64, fd, tiny, sizeof tiny), EINVAL);
    close(fd);
    EXPECT_FD(fd, "open(file)", open("entry-000", O_RDONLY));
    _Alignas(8) char buf[512];
    EXPECT_ERRNO("getdents64(regular_file)", syscall(SYS_getdents64, fd, buf, sizeof buf), ENOTDIR);
    close(fd);
    return NULL;
}

/* mkdir: an existing name (directory, file or symbolic link) EEXIST; a missing parent ENOENT; a file as parent
 * ENOTDIR; a trailing slash is fine. */
CHECK(c_mkdir_errors) {
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("f", "x") == 0, "put_errno=%d", errno);
    EXPECT(symlink("nowhere", "l") == 0, "symlink_errno=%d", errno);
    EXPECT_ERRNO("mkdir(existing_dir)", mkdir("d", 0755), EEXIST);
    EXPECT_ERRNO("mkdir(existing_file)", mkdir("f", 0755), EEXIST);
    EXPECT_ERRNO("mkdir(dangling_symlink)", mkdir("l", 0755), EEXIST);
    EXPECT_ERRNO("mkdir(.)", mkdir(".", 0755), EEXIST);
    EXPECT_ERRNO("mkdir(missing/x)", mkdir("missing/x", 0755), ENOENT);
    EXPECT_ERRNO("mkdir(f/x)", mkdir("f/x", 0755), ENOTDIR);
    EXPECT_RC("mkdir(e/)", mkdir("e/", 0755), 0);
    EXPECT(S_ISDIR(mode_of("e")), "mkdir(e/)_made_mode=%#o", (unsigned)mode_of("e"));
    int dfd;
    EXPECT_FD(dfd, "open(d)", open("d", O_RDONLY | O_DIRECTORY));
    EXPECT_RC("mkdirat(d,sub)", mkdirat(dfd, "sub", 0755), 0);
    close(dfd);
    EXPECT(S_ISDIR(mode_of("d/sub")), "mkdirat_did_not_make_d/sub");
    return NULL;
}

/* rmdir: a non-empty directory ENOTEMPTY; a file ENOTDIR; "." EINVAL; a missing name ENOENT; an empty one goes. */
CHECK(c_rmdir_errors) {
    EXPECT(mkdir("d", 0755) == 0 && mkdir("d/sub", 0755) == 0 && mkdir("e", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("f", "x") == 0 && put("e/f", "x") == 0, "put_errno=%d", errno);
    EXPECT_ERRNO("rmdir(dir_with_subdir)", rmdir("d"), ENOTEMPTY);
    EXPECT_ERRNO("rmdir(dir_with_file)", rmdir("e"), ENOTEMPTY);
    EXPECT_ERRNO("rmdir(file)", rmdir("f"), ENOTDIR);
    EXPECT_ERRNO("rmdir(.)", rmdir("."), EINVAL);
    EXPECT_ERRNO("rmdir(d/sub/.)", rmdir("d/sub/."), EINVAL);
    EXPECT_ERRNO("rmdir(missing)", rmdir("missing"), ENOENT);
    EXPECT_RC("rmdir(d/sub)", rmdir("d/sub"), 0);
    EXPECT(mode_of("d/sub") == 0 && errno == ENOENT, "d/sub_still_there");
    EXPECT_RC("rmdir(d)", rmdir("d"), 0);
    return NULL;
}

/* unlink: a directory EISDIR; a missing name ENOENT; a symbolic link goes, not its target; unlinkat with
 * AT_REMOVEDIR removes a directory and refuses a file (ENOTDIR). */
CHECK(c_unlink_errors) {
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("f", "x") == 0, "put_errno=%d", errno);
    EXPECT(symlink("f", "l") == 0, "symlink_errno=%d", errno);
    EXPECT_ERRNO("unlink(dir)", unlink("d"), EISDIR);
    EXPECT_ERRNO("unlink(missing)", unlink("missing"), ENOENT);
    EXPECT_ERRNO("unlink(f/x)", unlink("f/x"), ENOTDIR);
    EXPECT_RC("unlink(symlink)", unlink("l"), 0);
    EXPECT(mode_of("l") == 0 && S_ISREG(mode_of("f")), "unlink_of_symlink_hit_the_target");
    EXPECT_ERRNO("unlinkat(file,AT_REMOVEDIR)", unlinkat(AT_FDCWD, "f", AT_REMOVEDIR), ENOTDIR);
    EXPECT_ERRNO("unlinkat(dir,0)", unlinkat(AT_FDCWD, "d", 0), EISDIR);
    EXPECT_RC("unlinkat(dir,AT_REMOVEDIR)", unlinkat(AT_FDCWD, "d", AT_REMOVEDIR), 0);
    EXPECT(mode_of("d") == 0, "unlinkat(AT_REMOVEDIR)_left_d");
    EXPECT_RC("unlinkat(f,0)", unlinkat(AT_FDCWD, "f", 0), 0);
    EXPECT(mode_of("f") == 0, "unlinkat_left_f");
    return NULL;
}

/* An unlinked file that is still open lives on: it reads and writes through the descriptor, fstat shows nlink 0;
 * the name is free for a new file. */
CHECK(c_unlink_open_file) {
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR | O_CREAT, 0644));
    EXPECT_RC("write", write(fd, "still here", 10), 10);
    EXPECT_RC("unlink", unlink("f"), 0);
    EXPECT_ERRNO("open(unlinked)", open("f", O_RDONLY), ENOENT);
    struct stat st;
    EXPECT(fstat(fd, &st) == 0 && st.st_nlink == 0 && st.st_size == 10, "fstat_after_unlink_nlink=%ld_size=%lld",
           (long)st.st_nlink, (long long)st.st_size);
    EXPECT_RC("write_after_unlink", write(fd, "!", 1), 1);
    char buf[16] = {0};
    EXPECT_RC("pread_after_unlink", pread(fd, buf, sizeof buf - 1, 0), 11);
    EXPECT(strcmp(buf, "still here!") == 0, "unlinked_file_holds_'%s'", buf);
    EXPECT(put("f", "new") == 0, "put_errno=%d", errno);
    EXPECT_CONTENT("f", "new");
    EXPECT_RC("pread_old", pread(fd, buf, 5, 0), 5);
    EXPECT(memcmp(buf, "still", 5) == 0, "unlinked_file_changed_by_the_new_one");
    close(fd);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* rename, renameat, renameat2 */

/* rename replaces an existing file atomically (an open descriptor keeps the old file); renaming a name onto
 * itself, or onto another hard link of the same file, does nothing and succeeds. */
CHECK(c_rename_replace_file) {
    EXPECT(put("a", "AAA") == 0 && put("b", "BBB") == 0, "put_errno=%d", errno);
    int fd;
    EXPECT_FD(fd, "open(b)", open("b", O_RDONLY));
    EXPECT_RC("rename(a,b)", rename("a", "b"), 0);
    EXPECT(mode_of("a") == 0, "a_still_there_after_rename");
    EXPECT_CONTENT("b", "AAA");
    char buf[4] = {0};
    EXPECT_RC("read_old_b", read(fd, buf, 3), 3);
    EXPECT(strcmp(buf, "BBB") == 0, "open_descriptor_of_replaced_file_reads_'%s'", buf);
    close(fd);
    EXPECT_RC("rename(b,b)", rename("b", "b"), 0);
    EXPECT_CONTENT("b", "AAA");
    EXPECT(link("b", "c") == 0, "link_errno=%d", errno);
    EXPECT_RC("rename(b,c)_hard_links", rename("b", "c"), 0);
    EXPECT(mode_of("b") != 0 && mode_of("c") != 0, "rename_between_hard_links_removed_a_name");
    EXPECT(nlink_of("c") == 2, "nlink_after_rename_between_links=%ld", nlink_of("c"));
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT_RC("rename(b,d/b)", rename("b", "d/b"), 0);
    EXPECT_CONTENT("d/b", "AAA");
    EXPECT_ERRNO("rename(missing,x)", rename("missing", "x"), ENOENT);
    EXPECT_ERRNO("rename(c,missing/x)", rename("c", "missing/x"), ENOENT);
    return NULL;
}

/* Directories: onto an empty directory it replaces it; onto a non-empty one ENOTEMPTY; into its own subtree
 * EINVAL; a file onto a directory EISDIR; a directory onto a file ENOTDIR. Moving a subdirectory moves a link
 * count from its old parent to its new one. */
CHECK(c_rename_directories) {
    EXPECT(mkdir("a", 0755) == 0 && mkdir("a/sub", 0755) == 0 && mkdir("b", 0755) == 0 && mkdir("c", 0755) == 0,
           "mkdir_errno=%d", errno);
    EXPECT(put("b/f", "x") == 0 && put("f", "x") == 0, "put_errno=%d", errno);
    EXPECT_ERRNO("rename(a,non-empty_b)", rename("a", "b"), ENOTEMPTY);
    EXPECT_ERRNO("rename(a,a/sub/x)", rename("a", "a/sub/x"), EINVAL);
    EXPECT_ERRNO("rename(a,a/sub)", rename("a", "a/sub"), EINVAL);
    EXPECT_ERRNO("rename(file,dir)", rename("f", "c"), EISDIR);
    EXPECT_ERRNO("rename(dir,file)", rename("c", "f"), ENOTDIR);
    EXPECT(nlink_of("a") == 3 && nlink_of("c") == 2, "nlinks_before_a=%ld_c=%ld", nlink_of("a"), nlink_of("c"));
    EXPECT_RC("rename(a/sub,c/sub)", rename("a/sub", "c/sub"), 0);
    EXPECT(nlink_of("a") == 2 && nlink_of("c") == 3, "nlinks_after_move_a=%ld_want_2_c=%ld_want_3", nlink_of("a"),
           nlink_of("c"));
    struct stat up, c;
    EXPECT(stat("c/sub/..", &up) == 0 && stat("c", &c) == 0 && up.st_ino == c.st_ino, "moved_dir's_.._not_new_parent");
    EXPECT_RC("rename(c,empty_a)", rename("c", "a"), 0);
    EXPECT(mode_of("c") == 0 && S_ISDIR(mode_of("a/sub")), "rename_onto_empty_dir_lost_contents");
    return NULL;
}

/* renameat (directory descriptors on both sides) and renameat2: RENAME_NOREPLACE refuses an existing target
 * (EEXIST), RENAME_EXCHANGE swaps two names (also a file and a directory) and needs both (ENOENT); both flags at
 * once EINVAL. */
CHECK(c_renameat2_flags) {
    EXPECT(mkdir("d1", 0755) == 0 && mkdir("d2", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("d1/a", "A") == 0, "put_errno=%d", errno);
    int fd1, fd2;
    EXPECT_FD(fd1, "open(d1)", open("d1", O_RDONLY | O_DIRECTORY));
    EXPECT_FD(fd2, "open(d2)", open("d2", O_RDONLY | O_DIRECTORY));
    EXPECT_RC("renameat(d1,a,d2,a)", renameat(fd1, "a", fd2, "a"), 0);
    EXPECT(mode_of("d1/a") == 0, "renameat_left_d1/a");
    EXPECT_CONTENT("d2/a", "A");
    EXPECT(put("x", "X") == 0 && put("y", "Y") == 0, "put_errno=%d", errno);
    EXPECT_ERRNO("renameat2(NOREPLACE,existing)", raw_renameat2(AT_FDCWD, "x", AT_FDCWD, "y", RENAME_NOREPLACE),
                 EEXIST);
    EXPECT_CONTENT("x", "X");
    EXPECT_CONTENT("y", "Y");
    EXPECT_RC("renameat2(NOREPLACE,free)", raw_renameat2(AT_FDCWD, "x", fd2, "x", RENAME_NOREPLACE), 0);
    EXPECT_CONTENT("d2/x", "X");
    EXPECT_RC("renameat2(EXCHANGE)", raw_renameat2(fd2, "x", AT_FDCWD, "y", RENAME_EXCHANGE), 0);
    EXPECT_CONTENT("d2/x", "Y");
    EXPECT_CONTENT("y", "X");
    EXPECT_RC("renameat2(EXCHANGE,file,dir)", raw_renameat2(AT_FDCWD, "y", AT_FDCWD, "d1", RENAME_EXCHANGE), 0);
    EXPECT(S_ISDIR(mode_of("y")) && S_ISREG(mode_of("d1")), "exchange_file_and_dir_modes_%#o_%#o",
           (unsigned)mode_of("y"), (unsigned)mode_of("d1"));
    EXPECT_CONTENT("d1", "X");
    EXPECT_ERRNO("renameat2(EXCHANGE,missing)", raw_renameat2(AT_FDCWD, "d1", AT_FDCWD, "missing", RENAME_EXCHANGE),
                 ENOENT);
    EXPECT_ERRNO("renameat2(NOREPLACE|EXCHANGE)",
                 raw_renameat2(AT_FDCWD, "d1", AT_FDCWD, "y", RENAME_NOREPLACE | RENAME_EXCHANGE), EINVAL);
    close(fd1);
    close(fd2);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* link, symlink, readlink */

/* A hard link is another name for the same inode: nlink counts names, data is shared, unlink takes one name away.
 * An existing new name EEXIST, a directory EPERM, a missing old name ENOENT. link() does not follow a symbolic
 * link; linkat with AT_SYMLINK_FOLLOW does. */
CHECK(c_link_nlink) {
    EXPECT(put("f", "one") == 0, "put_errno=%d", errno);
    EXPECT_RC("link(f,g)", link("f", "g"), 0);
    struct stat a, b;
    EXPECT(stat("f", &a) == 0 && stat("g", &b) == 0, "stat_errno=%d", errno);
    EXPECT(a.st_ino == b.st_ino && a.st_dev == b.st_dev, "hard_link_has_another_inode");
    EXPECT(a.st_nlink == 2 && b.st_nlink == 2, "nlink_after_link=%ld/%ld_want_2", (long)a.st_nlink, (long)b.st_nlink);
    int fd;
    EXPECT_FD(fd, "open(g,O_APPEND)", open("g", O_WRONLY | O_APPEND));
    EXPECT_RC("write", write(fd, "two", 3), 3);
    close(fd);
    EXPECT_CONTENT("f", "onetwo");
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT_RC("link(f,d/h)", link("f", "d/h"), 0);
    EXPECT(nlink_of("f") == 3, "nlink_with_3_names=%ld", nlink_of("f"));
    EXPECT_ERRNO("link(f,g)_existing", link("f", "g"), EEXIST);
    EXPECT_ERRNO("link(dir)", link("d", "d2"), EPERM);
    EXPECT_ERRNO("link(missing)", link("missing", "x"), ENOENT);
    EXPECT_RC("unlink(f)", unlink("f"), 0);
    EXPECT(nlink_of("g") == 2, "nlink_after_unlink=%ld_want_2", nlink_of("g"));
    EXPECT_CONTENT("d/h", "onetwo");
    EXPECT(symlink("g", "l") == 0, "symlink_errno=%d", errno);
    EXPECT_RC("link(symlink,m)", link("l", "m"), 0);
    EXPECT(S_ISLNK(mode_of("m")), "link()_followed_the_symlink_mode=%#o", (unsigned)mode_of("m"));
    EXPECT_RC("linkat(symlink,n,AT_SYMLINK_FOLLOW)", linkat(AT_FDCWD, "l", AT_FDCWD, "n", AT_SYMLINK_FOLLOW), 0);
    EXPECT(S_ISREG(mode_of("n")) && nlink_of("g") == 3, "linkat(AT_SYMLINK_FOLLOW)_mode=%#o_nlink=%ld",
           (unsigned)mode_of("n"), nlink_of("g"));
    return NULL;
}

/* readlink gives the target without a NUL, truncated to the buffer (returning the buffer size); a name that is
 * not a link gives EINVAL, a missing one ENOENT; symlink onto an existing name EEXIST; a dangling link cannot be
 * opened (ENOENT) but lstat sees it, with permissions 0777 (symlink(7)). A relative target is resolved from the
 * link's directory. */
CHECK(c_symlink_readlink) {
    EXPECT(symlink("some/target/path", "l") == 0, "symlink_errno=%d", errno);
    char buf[64];
    memset(buf, 'Z', sizeof buf);
    EXPECT_RC("readlink", readlink("l", buf, sizeof buf), 16);
    EXPECT(memcmp(buf, "some/target/path", 16) == 0 && buf[16] == 'Z', "readlink_gave_'%.17s'", buf);
    memset(buf, 'Z', sizeof buf);
    EXPECT_RC("readlink(5_byte_buffer)", readlink("l", buf, 5), 5);
    EXPECT(memcmp(buf, "some/Z", 6) == 0, "truncated_readlink_gave_'%.6s'", buf);
    EXPECT(put("f", "x") == 0, "put_errno=%d", errno);
    EXPECT_ERRNO("readlink(regular_file)", readlink("f", buf, sizeof buf), EINVAL);
    EXPECT_ERRNO("readlink(directory)", readlink(".", buf, sizeof buf), EINVAL);
    EXPECT_ERRNO("readlink(missing)", readlink("missing", buf, sizeof buf), ENOENT);
    EXPECT_ERRNO("raw_readlink(size_0)", syscall(SYS_readlink, "l", buf, 0), EINVAL);
    EXPECT_ERRNO("symlink(existing)", symlink("x", "f"), EEXIST);
    EXPECT_ERRNO("symlink(empty_target)", symlink("", "e"), ENOENT);
    EXPECT_ERRNO("open(dangling)", open("l", O_RDONLY), ENOENT);
    struct stat st;
    EXPECT(lstat("l", &st) == 0 && S_ISLNK(st.st_mode), "lstat(dangling)_errno=%d", errno);
    EXPECT((st.st_mode & 07777) == 0777, "symlink_permissions=%#o_want_0777", (unsigned)(st.st_mode & 07777));
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("target", "top") == 0, "put_errno=%d", errno);
    EXPECT(symlink("../target", "d/up") == 0, "symlink_errno=%d", errno);
    EXPECT_CONTENT("d/up", "top");
    int dfd;
    EXPECT_FD(dfd, "open(d)", open("d", O_RDONLY | O_DIRECTORY));
    EXPECT_RC("symlinkat(d,rel)", symlinkat("up", dfd, "rel"), 0);
    memset(buf, 0, sizeof buf);
    EXPECT_RC("readlinkat(d,rel)", readlinkat(dfd, "rel", buf, sizeof buf), 2);
    EXPECT(strcmp(buf, "up") == 0, "readlinkat_gave_'%s'", buf);
    close(dfd);
    EXPECT_CONTENT("d/rel", "top"); /* a link to a link */
    return NULL;
}

/* A loop of symbolic links (and a link to itself) gives ELOOP when followed. */
CHECK(c_symlink_loop) {
    EXPECT(symlink("b", "a") == 0 && symlink("a", "b") == 0 && symlink("self", "self") == 0, "symlink_errno=%d",
           errno);
    struct stat st;
    EXPECT_ERRNO("open(a)", open("a", O_RDONLY), ELOOP);
    EXPECT_ERRNO("open(self)", open("self", O_RDONLY), ELOOP);
    EXPECT_ERRNO("open(a,O_CREAT)", open("a", O_RDWR | O_CREAT, 0644), ELOOP);
    EXPECT_ERRNO("stat(a)", stat("a", &st), ELOOP);
    EXPECT_ERRNO("stat(a/x)", stat("a/x", &st), ELOOP);
    EXPECT_ERRNO("chdir(self)", chdir("self"), ELOOP);
    EXPECT(lstat("a", &st) == 0 && S_ISLNK(st.st_mode), "lstat(a)_errno=%d", errno);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* the current directory, access, modes, times */

/* chdir and fchdir move the current directory, getcwd names it; a file is ENOTDIR, a missing name ENOENT; a
 * buffer too small for the name ERANGE; the raw getcwd returns the length with the NUL. */
CHECK(c_chdir_getcwd) {
    char cwd[PATH_MAX], want[PATH_MAX];
    EXPECT(getcwd(cwd, sizeof cwd) != NULL, "getcwd_errno=%d", errno);
    EXPECT(strcmp(cwd, checkdir) == 0, "getcwd=%s_want_%s", cwd, checkdir);
    EXPECT(mkdir("d", 0755) == 0 && mkdir("d/e", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(put("f", "x") == 0 && put("d/e/g", "deep") == 0, "put_errno=%d", errno);
    EXPECT_RC("chdir(d/e)", chdir("d/e"), 0);
    EXPECT(getcwd(cwd, sizeof cwd) != NULL, "getcwd_errno=%d", errno);
    snprintf(want, sizeof want, "%s/d/e", checkdir);
    EXPECT(strcmp(cwd, want) == 0, "getcwd=%s_want_%s", cwd, want);
    EXPECT_CONTENT("g", "deep");
    EXPECT_RC("raw_getcwd", syscall(SYS_getcwd, cwd, sizeof cwd), (long)strlen(want) + 1);
    EXPECT_ERRNO("raw_getcwd(1_byte)", syscall(SYS_getcwd, cwd, 1), ERANGE);
    EXPECT_ERRNO("raw_getcwd(short_by_one)", syscall(SYS_getcwd, cwd, strlen(want)), ERANGE);
    EXPECT_RC("chdir(../..)", chdir("../.."), 0);
    EXPECT(getcwd(cwd, sizeof cwd) != NULL && strcmp(cwd, checkdir) == 0, "getcwd_after_.._=%s", cwd);
    int dfd;
    EXPECT_FD(dfd, "open(d)", open("d", O_RDONLY | O_DIRECTORY));
    EXPECT_RC("fchdir(d)", fchdir(dfd), 0);
    close(dfd);
    snprintf(want, sizeof want, "%s/d", checkdir);
    EXPECT(getcwd(cwd, sizeof cwd) != NULL && strcmp(cwd, want) == 0, "getcwd_after_fchdir=%s_want_%s", cwd, want);
    EXPECT_ERRNO("chdir(file)", chdir("../f"), ENOTDIR);
    EXPECT_ERRNO("chdir(missing)", chdir("missing"), ENOENT);
    int fd;
    EXPECT_FD(fd, "open(file)", open("../f", O_RDONLY));
    EXPECT_ERRNO("fchdir(file)", fchdir(fd), ENOTDIR);
    close(fd);
    EXPECT_ERRNO("fchdir(closed)", fchdir(NO_SUCH_FD), EBADF);
    EXPECT(getcwd(cwd, sizeof cwd) != NULL && strcmp(cwd, want) == 0, "failed_chdir_moved_cwd_to_%s", cwd);
    return NULL;
}

/* getcwd in a directory that has been removed fails with ENOENT. */
CHECK(c_getcwd_removed_dir) {
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT_RC("chdir(d)", chdir("d"), 0);
    EXPECT_RC("rmdir(../d)", rmdir("../d"), 0);
    char cwd[PATH_MAX];
    EXPECT_ERRNO("raw_getcwd(removed)", syscall(SYS_getcwd, cwd, sizeof cwd), ENOENT);
    EXPECT_ERRNO("creat_in_removed_dir", open("f", O_RDWR | O_CREAT, 0644), ENOENT);
    return NULL;
}

/* access and faccessat with F_OK: 0 for what exists, ENOENT for what does not (also through a dangling link);
 * root may read and write anything. */
CHECK(c_access_faccessat) {
    EXPECT(put("f", "x") == 0, "put_errno=%d", errno);
    EXPECT(mkdir("d", 0755) == 0 && put("d/g", "y") == 0, "setup_errno=%d", errno);
    EXPECT(symlink("nowhere", "dangling") == 0, "symlink_errno=%d", errno);
    EXPECT_RC("access(f,F_OK)", access("f", F_OK), 0);
    EXPECT_RC("access(d,F_OK)", access("d", F_OK), 0);
    EXPECT_RC("access(f,R_OK|W_OK)", access("f", R_OK | W_OK), 0);
    EXPECT(chmod("f", 0) == 0, "chmod_errno=%d", errno);
    EXPECT_RC("access(mode_0,R_OK|W_OK)_as_root", access("f", R_OK | W_OK), 0);
    EXPECT_ERRNO("access(missing)", access("missing", F_OK), ENOENT);
    EXPECT_ERRNO("access(dangling)", access("dangling", F_OK), ENOENT);
    EXPECT_ERRNO("access(f/x)", access("f/x", F_OK), ENOTDIR);
    EXPECT_ERRNO("raw_access(bad_mode)", syscall(SYS_access, "f", 0x10), EINVAL);
    int dfd;
    EXPECT_FD(dfd, "open(d)", open("d", O_RDONLY | O_DIRECTORY));
    EXPECT_RC("faccessat(d,g)", faccessat(dfd, "g", F_OK, 0), 0);
    EXPECT_ERRNO("faccessat(d,f)", faccessat(dfd, "f", F_OK, 0), ENOENT);
    EXPECT_RC("raw_faccessat(d,g)", syscall(SYS_faccessat, dfd, "g", F_OK), 0);
    close(dfd);
    return NULL;
}

/* chmod, fchmod and fchmodat change the permission bits (set-id and sticky bits too) and keep the type; chmod
 * follows a symbolic link. */
CHECK(c_chmod_fchmod) {
    EXPECT(put("f", "x") == 0, "put_errno=%d", errno);
    EXPECT(mkdir("d", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(symlink("f", "l") == 0, "symlink_errno=%d", errno);
    EXPECT_RC("chmod(f,0640)", chmod("f", 0640), 0);
    EXPECT(mode_of("f") == (S_IFREG | 0640), "mode_after_chmod=%#o", (unsigned)mode_of("f"));
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDONLY));
    EXPECT_RC("fchmod(0600)", fchmod(fd, 0600), 0);
    struct stat st;
    EXPECT(fstat(fd, &st) == 0 && st.st_mode == (S_IFREG | 0600), "mode_after_fchmod=%#o", (unsigned)st.st_mode);
    close(fd);
    EXPECT_RC("chmod(l,04711)", chmod("l", 04711), 0);
    EXPECT(mode_of("f") == (S_IFREG | 04711), "chmod_through_link_mode=%#o", (unsigned)mode_of("f"));
    EXPECT(S_ISLNK(mode_of("l")), "link_lost_its_type");
    EXPECT_RC("chmod(d,01777)", chmod("d", 01777), 0);
    EXPECT(mode_of("d") == (S_IFDIR | 01777), "dir_mode_after_chmod=%#o", (unsigned)mode_of("d"));
    EXPECT_RC("fchmodat(AT_FDCWD,d,0700)", fchmodat(AT_FDCWD, "d", 0700, 0), 0);
    EXPECT(mode_of("d") == (S_IFDIR | 0700), "dir_mode_after_fchmodat=%#o", (unsigned)mode_of("d"));
    EXPECT_ERRNO("chmod(missing)", chmod("missing", 0644), ENOENT);
    EXPECT_ERRNO("fchmod(closed)", fchmod(NO_SUCH_FD, 0644), EBADF);
    return NULL;
}

/* The umask clears bits of the mode given to open(O_CREAT), creat and mkdir; umask returns the old mask. */
CHECK(c_umask) {
    EXPECT(umask(027) == 022, "umask_did_not_return_the_old_mask");
    int fd;
    EXPECT_FD(fd, "creat", creat("f", 0666));
    close(fd);
    EXPECT(mode_of("f") == (S_IFREG | 0640), "creat(0666)_under_027_mode=%#o_want_0640", (unsigned)mode_of("f"));
    EXPECT(mkdir("d", 0777) == 0, "mkdir_errno=%d", errno);
    EXPECT(mode_of("d") == (S_IFDIR | 0750), "mkdir(0777)_under_027_mode=%#o_want_0750", (unsigned)mode_of("d"));
    EXPECT(umask(0) == 027, "umask_did_not_return_027");
    EXPECT_FD(fd, "open(O_CREAT,0777)", open("g", O_RDWR | O_CREAT, 0777));
    close(fd);
    EXPECT(mode_of("g") == (S_IFREG | 0777), "open(0777)_under_0_mode=%#o", (unsigned)mode_of("g"));
    EXPECT(umask(0777) == 0, "umask_did_not_return_0");
    EXPECT(mkdir("e", 0755) == 0, "mkdir_errno=%d", errno);
    EXPECT(mode_of("e") == S_IFDIR, "mkdir_under_0777_mode=%#o", (unsigned)mode_of("e"));
    EXPECT(umask(0) == 0777, "umask_did_not_return_0777");
    return NULL;
}

/* utimensat: explicit times (nanoseconds kept) show in stat; UTIME_OMIT leaves one alone; UTIME_NOW and a NULL
 * times set the current time; a nanosecond field out of range EINVAL. A write moves the modification time on. */
CHECK(c_utimensat_times) {
    EXPECT(put("f", "x") == 0, "put_errno=%d", errno);
    struct timespec ts[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
    EXPECT_RC("utimensat(explicit)", utimensat(AT_FDCWD, "f", ts, 0), 0);
    struct stat st;
    EXPECT(stat("f", &st) == 0, "stat_errno=%d", errno);
    EXPECT(st.st_atim.tv_sec == 1000000000 && st.st_atim.tv_nsec == 123456789, "atime=%lld.%09ld",
           (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec);
    EXPECT(st.st_mtim.tv_sec == 1100000000 && st.st_mtim.tv_nsec == 987654321, "mtime=%lld.%09ld",
           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct timespec omit[2] = {{0, UTIME_OMIT}, {1200000000, 5}};
    EXPECT_RC("utimensat(UTIME_OMIT,mtime)", utimensat(AT_FDCWD, "f", omit, 0), 0);
    EXPECT(stat("f", &st) == 0, "stat_errno=%d", errno);
    EXPECT(st.st_atim.tv_sec == 1000000000 && st.st_atim.tv_nsec == 123456789, "UTIME_OMIT_changed_atime_to_%lld",
           (long long)st.st_atim.tv_sec);
    EXPECT(st.st_mtim.tv_sec == 1200000000 && st.st_mtim.tv_nsec == 5, "mtime_after_omit=%lld.%09ld",
           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    long long before = clock_ns(CLOCK_REALTIME) / 1000000000LL;
    struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    EXPECT_RC("utimensat(UTIME_NOW,omit)", utimensat(AT_FDCWD, "f", now, 0), 0);
    EXPECT(stat("f", &st) == 0, "stat_errno=%d", errno);
    long long after = clock_ns(CLOCK_REALTIME) / 1000000000LL;
    EXPECT(st.st_atim.tv_sec >= before - 1 && st.st_atim.tv_sec <= after + 1, "UTIME_NOW_atime=%lld_now=%lld",
           (long long)st.st_atim.tv_sec, before);
    EXPECT(st.st_mtim.tv_sec == 1200000000, "UTIME_OMIT_changed_mtime_to_%lld", (long long)st.st_mtim.tv_sec);
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR));
    EXPECT_RC("futimens(explicit)", futimens(fd, ts), 0);
    EXPECT(fstat(fd, &st) == 0 && st.st_mtim.tv_sec == 1100000000, "futimens_mtime=%lld",
           (long long)st.st_mtim.tv_sec);
    EXPECT_RC("write", write(fd, "y", 1), 1);
    EXPECT(fstat(fd, &st) == 0 && st.st_mtim.tv_sec >= before - 1, "write_left_mtime_at_%lld",
           (long long)st.st_mtim.tv_sec);
    close(fd);
    EXPECT_RC("utimensat(NULL)", utimensat(AT_FDCWD, "f", NULL, 0), 0);
    EXPECT(stat("f", &st) == 0 && st.st_atim.tv_sec >= before - 1 && st.st_mtim.tv_sec >= before - 1,
           "utimensat(NULL)_times_%lld_%lld", (long long)st.st_atim.tv_sec, (long long)st.st_mtim.tv_sec);
    struct timespec bad[2] = {{0, 1000000000}, {0, 0}};
    EXPECT_ERRNO("utimensat(nsec_1e9)", utimensat(AT_FDCWD, "f", bad, 0), EINVAL);
    EXPECT_ERRNO("utimensat(missing)", utimensat(AT_FDCWD, "missing", ts, 0), ENOENT);
    return NULL;
}

/* fsync and fdatasync on a file return 0 (EBADF on a closed descriptor); statfs and fstatfs return 0 with a block
 * size; statfs of a missing path ENOENT. */
CHECK(c_fsync_statfs) {
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR | O_CREAT, 0644));
    EXPECT_RC("write", write(fd, "x", 1), 1);
    EXPECT_RC("fsync", fsync(fd), 0);
    EXPECT_RC("fdatasync", fdatasync(fd), 0);
    struct statfs sf;
    memset(&sf, 0, sizeof sf);
    EXPECT_RC("fstatfs", fstatfs(fd, &sf), 0);
    EXPECT(sf.f_bsize > 0, "fstatfs_f_bsize=%ld", (long)sf.f_bsize);
    close(fd);
    EXPECT_ERRNO("fsync(closed)", fsync(fd), EBADF);
    memset(&sf, 0, sizeof sf);
    EXPECT_RC("statfs(.)", statfs(".", &sf), 0);
    EXPECT(sf.f_bsize > 0, "statfs_f_bsize=%ld", (long)sf.f_bsize);
    EXPECT_ERRNO("statfs(missing)", statfs("missing", &sf), ENOENT);
    EXPECT_FD(fd, "open(.)", open(".", O_RDONLY | O_DIRECTORY));
    EXPECT_RC("fsync(directory)", fsync(fd), 0);
    close(fd);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* dup, dup2, dup3, fcntl */

/* dup gives the lowest free descriptor for the same open file: the offset and the status flags are shared. */
CHECK(c_dup_shared_offset) {
    EXPECT(put("f", "0123456789") == 0, "put_errno=%d", errno);
    int a, b, c;
    EXPECT_FD(a, "open", open("f", O_RDWR));
    EXPECT_FD(c, "open(.)", open(".", O_RDONLY));
    close(c); /* c is now the lowest free descriptor above a */
    EXPECT_FD(b, "dup", dup(a));
    EXPECT(b == c, "dup_gave_%d_want_lowest_free_%d", b, c);
    char buf[4] = {0};
    EXPECT_RC("read(a)", read(a, buf, 3), 3);
    EXPECT_RC("read(b)", read(b, buf, 3), 3);
    EXPECT(memcmp(buf, "345", 3) == 0, "dup_does_not_share_the_offset_(read_'%.3s')", buf);
    EXPECT_RC("lseek(b,8)", lseek(b, 8, SEEK_SET), 8);
    EXPECT_RC("lseek(a,0,SEEK_CUR)", lseek(a, 0, SEEK_CUR), 8);
    EXPECT_RC("F_SETFL(a,O_APPEND)", fcntl(a, F_SETFL, O_APPEND), 0);
    EXPECT(fcntl(b, F_GETFL) & O_APPEND, "status_flags_not_shared_by_dup");
    close(a);
    EXPECT_RC("read(b)_after_closing_a", read(b, buf, 2), 2);
    EXPECT(memcmp(buf, "89", 2) == 0, "read_after_close_'%.2s'", buf);
    close(b);
    return NULL;
}

/* dup2 onto itself returns the descriptor (EBADF if it is not open); dup2 onto an open descriptor closes that one
 * first; dup3 onto itself is EINVAL, with O_CLOEXEC it sets FD_CLOEXEC, with another flag EINVAL; a target out of
 * range EBADF. */
CHECK(c_dup2_dup3) {
    EXPECT(put("f", "F") == 0 && put("g", "G") == 0, "put_errno=%d", errno);
    int f, g;
    EXPECT_FD(f, "open(f)", open("f", O_RDONLY));
    EXPECT_FD(g, "open(g)", open("g", O_RDONLY));
    EXPECT_RC("dup2(f,f)", dup2(f, f), f);
    EXPECT_RC("raw_dup2(f,f)", syscall(SYS_dup2, f, f), f);
    EXPECT_ERRNO("dup2(closed,closed)", syscall(SYS_dup2, NO_SUCH_FD, NO_SUCH_FD), EBADF);
    EXPECT_ERRNO("dup2(closed,g)", syscall(SYS_dup2, NO_SUCH_FD, g), EBADF);
    char c = 0;
    EXPECT_RC("pread(g)_after_failed_dup2", pread(g, &c, 1, 0), 1);
    EXPECT(c == 'G', "failed_dup2_changed_g");
    EXPECT_RC("dup2(f,g)", dup2(f, g), g);
    EXPECT_RC("pread(g)", pread(g, &c, 1, 0), 1);
    EXPECT(c == 'F', "after_dup2(f,g)_g_reads_%c_want_F", c);
    EXPECT_ERRNO("dup3(f,f,0)", syscall(SYS_dup3, f, f, 0), EINVAL);
    EXPECT_RC("dup3(f,g,O_CLOEXEC)", dup3(f, g, O_CLOEXEC), g);
    EXPECT(fd_flags(g) == FD_CLOEXEC, "dup3(O_CLOEXEC)_F_GETFD=%d", fd_flags(g));
    EXPECT_RC("dup3(f,g,0)", dup3(f, g, 0), g);
    EXPECT(fd_flags(g) == 0, "dup3(0)_F_GETFD=%d", fd_flags(g));
    EXPECT_ERRNO("dup3(f,g,O_NONBLOCK)", syscall(SYS_dup3, f, g, O_NONBLOCK), EINVAL);
    EXPECT_ERRNO("dup2(f,-1)", syscall(SYS_dup2, f, -1), EBADF);
    struct rlimit rl;
    EXPECT(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit_errno=%d", errno);
    EXPECT_ERRNO("dup2(f,RLIMIT_NOFILE)", syscall(SYS_dup2, f, (long)rl.rlim_cur), EBADF);
    return NULL;
}

/* FD_CLOEXEC belongs to the descriptor: dup, dup2 and F_DUPFD give a descriptor without it, F_DUPFD_CLOEXEC one
 * with it. */
CHECK(c_dup_clears_cloexec) {
    int a, b;
    EXPECT_FD(a, "open(O_CLOEXEC)", open(".", O_RDONLY | O_CLOEXEC));
    EXPECT(fd_flags(a) == FD_CLOEXEC, "O_CLOEXEC_F_GETFD=%d", fd_flags(a));
    EXPECT_FD(b, "dup", dup(a));
    EXPECT(fd_flags(b) == 0, "dup_copied_FD_CLOEXEC");
    EXPECT_RC("dup2", dup2(a, 40), 40);
    EXPECT(fd_flags(40) == 0, "dup2_copied_FD_CLOEXEC");
    int c, d;
    EXPECT_FD(c, "F_DUPFD", fcntl(a, F_DUPFD, 0));
    EXPECT(fd_flags(c) == 0, "F_DUPFD_copied_FD_CLOEXEC");
    EXPECT_FD(d, "F_DUPFD_CLOEXEC", fcntl(b, F_DUPFD_CLOEXEC, 0));
    EXPECT(fd_flags(d) == FD_CLOEXEC, "F_DUPFD_CLOEXEC_F_GETFD=%d", fd_flags(d));
    EXPECT(fd_flags(a) == FD_CLOEXEC && fd_flags(b) == 0, "duplicating_changed_the_original's_flags");
    return NULL;
}

/* F_DUPFD and F_DUPFD_CLOEXEC give the lowest free descriptor at or above the argument; a negative argument or
 * one at RLIMIT_NOFILE EINVAL. */
CHECK(c_fcntl_dupfd) {
    int a;
    EXPECT_FD(a, "open", open(".", O_RDONLY));
    EXPECT_RC("F_DUPFD(30)", fcntl(a, F_DUPFD, 30), 30);
    EXPECT_RC("F_DUPFD(30)_again", fcntl(a, F_DUPFD, 30), 31);
    EXPECT_RC("F_DUPFD_CLOEXEC(30)", fcntl(a, F_DUPFD_CLOEXEC, 30), 32);
    close(31);
    EXPECT_RC("F_DUPFD(29)", fcntl(a, F_DUPFD, 29), 29);
    EXPECT_RC("F_DUPFD(29)_fills_the_gap", fcntl(a, F_DUPFD, 29), 31);
    int low;
    EXPECT_FD(low, "F_DUPFD(0)", fcntl(a, F_DUPFD, 0));
    EXPECT(low < a + 2, "F_DUPFD(0)_gave_%d", low);
    EXPECT_ERRNO("F_DUPFD(-1)", syscall(SYS_fcntl, a, F_DUPFD, -1L), EINVAL);
    struct rlimit rl;
    EXPECT(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit_errno=%d", errno);
    EXPECT_ERRNO("F_DUPFD(RLIMIT_NOFILE)", syscall(SYS_fcntl, a, F_DUPFD, (long)rl.rlim_cur), EINVAL);
    return NULL;
}

/* F_GETFL gives the access mode and status flags; F_SETFL changes O_APPEND and O_NONBLOCK (and their effect) but
 * never the access mode. */
CHECK(c_fcntl_getfl_setfl) {
    int fd;
    EXPECT_FD(fd, "open(O_RDWR|O_APPEND)", open("f", O_RDWR | O_CREAT | O_APPEND, 0644));
    int fl = fcntl(fd, F_GETFL);
    EXPECT(fl != -1 && (fl & O_ACCMODE) == O_RDWR && (fl & O_APPEND) && !(fl & O_NONBLOCK), "F_GETFL=%#x", fl);
    EXPECT_RC("F_SETFL(O_NONBLOCK)", fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    fl = fcntl(fd, F_GETFL);
    EXPECT((fl & O_ACCMODE) == O_RDWR && !(fl & O_APPEND) && (fl & O_NONBLOCK), "F_GETFL_after_set_nonblock=%#x", fl);
    EXPECT_RC("write", write(fd, "abcdef", 6), 6);
    EXPECT_RC("lseek(0)", lseek(fd, 0, SEEK_SET), 0);
    EXPECT_RC("write_at_0_without_O_APPEND", write(fd, "X", 1), 1);
    EXPECT_RC("F_SETFL(O_WRONLY|O_APPEND)", fcntl(fd, F_SETFL, O_WRONLY | O_APPEND), 0);
    fl = fcntl(fd, F_GETFL);
    EXPECT((fl & O_ACCMODE) == O_RDWR && (fl & O_APPEND) && !(fl & O_NONBLOCK), "F_GETFL_after_set_append=%#x", fl);
    EXPECT_RC("lseek(0)", lseek(fd, 0, SEEK_SET), 0);
    EXPECT_RC("write_with_O_APPEND", write(fd, "Y", 1), 1);
    char c;
    EXPECT_RC("pread_still_allowed", pread(fd, &c, 1, 0), 1);
    close(fd);
    EXPECT_CONTENT("f", "XbcdefY");
    EXPECT_FD(fd, "open(O_RDONLY)", open("f", O_RDONLY));
    EXPECT_RC("F_SETFL(O_RDWR)", fcntl(fd, F_SETFL, O_RDWR), 0);
    EXPECT((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY, "F_SETFL_changed_the_access_mode");
    EXPECT_ERRNO("write(read_only_after_F_SETFL)", write(fd, "z", 1), EBADF);
    close(fd);
    int p[2];
    EXPECT(pipe(p) == 0, "pipe_errno=%d", errno);
    EXPECT((fcntl(p[0], F_GETFL) & O_ACCMODE) == O_RDONLY && (fcntl(p[1], F_GETFL) & O_ACCMODE) == O_WRONLY,
           "pipe_access_modes_%#x_%#x", fcntl(p[0], F_GETFL), fcntl(p[1], F_GETFL));
    EXPECT_RC("F_SETFL(pipe,O_NONBLOCK)", fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    EXPECT_ERRNO("read(empty_nonblocking_pipe)", read(p[0], &c, 1), EAGAIN);
    return NULL;
}

/* fcntl on a closed descriptor EBADF; an unknown command EINVAL. */
CHECK(c_fcntl_errors) {
    EXPECT_ERRNO("F_GETFD(closed)", fcntl(NO_SUCH_FD, F_GETFD), EBADF);
    EXPECT_ERRNO("F_SETFD(closed)", fcntl(NO_SUCH_FD, F_SETFD, FD_CLOEXEC), EBADF);
    EXPECT_ERRNO("F_GETFL(closed)", fcntl(NO_SUCH_FD, F_GETFL), EBADF);
    EXPECT_ERRNO("F_DUPFD(closed)", fcntl(NO_SUCH_FD, F_DUPFD, 0), EBADF);
    int fd;
    EXPECT_FD(fd, "open", open(".", O_RDONLY));
    EXPECT_ERRNO("fcntl(cmd_9999)", syscall(SYS_fcntl, fd, 9999, 0), EINVAL);
    return NULL;
}

/* A forked child's descriptors refer to the same open files: its reads and writes move the parent's offset. */
CHECK(c_fork_shares_offset) {
    int fd;
    EXPECT_FD(fd, "open", open("f", O_RDWR | O_CREAT, 0644));
    EXPECT_RC("write", write(fd, "parent1,", 8), 8);
    pid_t pid = spawn();
    EXPECT(pid >= 0, "fork_errno=%d", errno);
    if (pid == 0)
        _exit(write(fd, "child,", 6) == 6 ? 0 : 3);
    EXPECT_END(pid, 0, 0);
    EXPECT_RC("offset_after_child's_write", lseek(fd, 0, SEEK_CUR), 14);
    EXPECT_RC("write", write(fd, "parent2", 7), 7);
    close(fd);
    EXPECT_CONTENT("f", "parent1,child,parent2");
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* pipes */

/* Data comes out in the order it went in; the read end is read-only, the write end write-only (EBADF otherwise);
 * fstat says FIFO; a bad pointer for the pair EFAULT. */
CHECK(c_pipe_basic) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    EXPECT_RC("write_1", write(p[1], "abc", 3), 3);
    EXPECT_RC("write_2", write(p[1], "defg", 4), 4);
    char buf[16] = {0};
    EXPECT_RC("read", read(p[0], buf, sizeof buf), 7);
    EXPECT(strcmp(buf, "abcdefg") == 0, "pipe_gave_'%s'", buf);
    EXPECT_ERRNO("write(read_end)", write(p[0], "x", 1), EBADF);
    EXPECT_ERRNO("read(write_end)", read(p[1], buf, 1), EBADF);
    struct stat st;
    EXPECT(fstat(p[0], &st) == 0 && S_ISFIFO(st.st_mode), "fstat(pipe)_mode=%#o", (unsigned)st.st_mode);
    EXPECT_RC("write_3", write(p[1], "hij", 3), 3);
    EXPECT_RC("short_read", read(p[0], buf, 2), 2);
    EXPECT_RC("rest", read(p[0], buf + 2, 10), 1);
    EXPECT(memcmp(buf, "hij", 3) == 0, "pipe_gave_'%.3s'", buf);
    uintptr_t h = hole();
    EXPECT(h, "no_hole_errno=%d", errno);
    EXPECT_ERRNO("raw_pipe(bad_pointer)", syscall(SYS_pipe, h), EFAULT);
    EXPECT_ERRNO("raw_pipe2(bad_pointer)", syscall(SYS_pipe2, h, 0), EFAULT);
    return NULL;
}

/* pipe2: O_CLOEXEC sets FD_CLOEXEC on both ends, O_NONBLOCK makes both non-blocking (an empty read EAGAIN, but
 * end of file once the writer is gone); an unknown flag EINVAL. */
CHECK(c_pipe2_flags) {
    int p[2], q[2];
    EXPECT_RC("pipe2(0)", pipe2(p, 0), 0);
    EXPECT(fd_flags(p[0]) == 0 && fd_flags(p[1]) == 0, "pipe2(0)_F_GETFD=%d,%d", fd_flags(p[0]), fd_flags(p[1]));
    EXPECT_RC("pipe2(O_CLOEXEC)", pipe2(q, O_CLOEXEC), 0);
    EXPECT(fd_flags(q[0]) == FD_CLOEXEC && fd_flags(q[1]) == FD_CLOEXEC, "pipe2(O_CLOEXEC)_F_GETFD=%d,%d",
           fd_flags(q[0]), fd_flags(q[1]));
    EXPECT(!(fcntl(q[0], F_GETFL) & O_NONBLOCK), "pipe2(O_CLOEXEC)_is_non-blocking");
    close(q[0]);
    close(q[1]);
    EXPECT_RC("pipe2(O_NONBLOCK)", pipe2(q, O_NONBLOCK), 0);
    EXPECT((fcntl(q[0], F_GETFL) & O_NONBLOCK) && (fcntl(q[1], F_GETFL) & O_NONBLOCK), "pipe2(O_NONBLOCK)_F_GETFL");
    EXPECT(fd_flags(q[0]) == 0, "pipe2(O_NONBLOCK)_set_FD_CLOEXEC");
    char c;
    EXPECT_ERRNO("read(empty)", read(q[0], &c, 1), EAGAIN);
    EXPECT_RC("write", write(q[1], "z", 1), 1);
    EXPECT_RC("read", read(q[0], &c, 1), 1);
    EXPECT_ERRNO("read(empty_again)", read(q[0], &c, 1), EAGAIN);
    close(q[1]);
    EXPECT_RC("read(no_writer)_is_end_of_file_not_EAGAIN", read(q[0], &c, 1), 0);
    EXPECT_ERRNO("pipe2(O_TRUNC)", syscall(SYS_pipe2, q, O_TRUNC), EINVAL);
    return NULL;
}

/* A non-blocking pipe fills up: then a write of PIPE_BUF (4096) bytes fails with EAGAIN and writes nothing, also
 * when some room (less than 4096 bytes) has been made; once there is room it succeeds. Every byte comes out once,
 * in order. */
CHECK(c_pipe_full_eagain) {
    int p[2];
    EXPECT_RC("pipe2(O_NONBLOCK)", pipe2(p, O_NONBLOCK), 0);
    static unsigned char chunk[4096], got[4096];
    long total = 0;
    for (;;) {
        for (int i = 0; i < 4096; i++)
            chunk[i] = (unsigned char)((total + i) % 251);
        ssize_t w = write(p[1], chunk, sizeof chunk);
        if (w == -1 && errno == EAGAIN)
            break;
        EXPECT(w == 4096, "filling_write_at_%ld=%zd_errno=%d_(want_all_4096_or_EAGAIN)", total, w, errno);
        total += w;
        EXPECT(total <= (16L << 20), "pipe_never_fills");
    }
    EXPECT(total >= 4096, "pipe_holds_only_%ld_bytes", total);
    for (int i = 0; i < 4096; i++)
        chunk[i] = 0xee; /* anything written by a failed write would show up as 0xee */
    EXPECT_ERRNO("write(4096,full)", write(p[1], chunk, 4096), EAGAIN);
    EXPECT_RC("read(100)", read(p[0], got, 100), 100);
    for (int i = 0; i < 100; i++)
        EXPECT(got[i] == (unsigned char)(i % 251), "byte_%d=%#x", i, got[i]);
    EXPECT_ERRNO("write(4096,100_bytes_free)", write(p[1], chunk, 4096), EAGAIN);
    long pos = 100;
    int fion = -1;
    EXPECT_RC("FIONREAD", ioctl(p[0], FIONREAD, &fion), 0);
    EXPECT(fion == total - 100, "FIONREAD=%d_want_%ld_(a_failed_write_wrote_something)", fion, total - 100);
    while (pos < total) {
        ssize_t r = read(p[0], got, sizeof got);
        EXPECT(r > 0, "drain_read_at_%ld=%zd_errno=%d", pos, r, errno);
        for (ssize_t i = 0; i < r; i++)
            EXPECT(got[i] == (unsigned char)((pos + i) % 251), "byte_%ld=%#x_want_%#x", (long)(pos + i), got[i],
                   (unsigned)((pos + i) % 251));
        pos += r;
    }
    EXPECT_ERRNO("read(drained)", read(p[0], got, 1), EAGAIN);
    EXPECT_RC("write(4096,empty)", write(p[1], chunk, 4096), 4096);
    return NULL;
}

/* The reader sees end of file (read returns 0) once the last write end is closed, after the data; also when the
 * last writer is another process that exits. */
CHECK(c_pipe_eof_last_writer) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    int w2;
    EXPECT_FD(w2, "dup", dup(p[1]));
    close(p[1]);
    EXPECT_RC("write(dup)", write(w2, "xy", 2), 2);
    close(w2);
    char buf[8];
    EXPECT_RC("read_data", read(p[0], buf, sizeof buf), 2);
    EXPECT_RC("read_eof", read(p[0], buf, sizeof buf), 0);
    EXPECT_RC("read_eof_again", read(p[0], buf, sizeof buf), 0);
    close(p[0]);
    step("across_fork");
    EXPECT_RC("pipe", pipe(p), 0);
    pid_t pid = spawn();
    EXPECT(pid >= 0, "fork_errno=%d", errno);
    if (pid == 0) {
        close(p[0]);
        sleep_ms(50);
        _exit(write(p[1], "from-child", 10) == 10 ? 0 : 3);
    }
    close(p[1]);
    char got[32] = {0};
    size_t n = 0;
    for (;;) {
        ssize_t r = read(p[0], got + n, sizeof got - 1 - n);
        EXPECT(r >= 0, "read_errno=%d", errno);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    EXPECT(strcmp(got, "from-child") == 0, "read_'%s'_before_eof", got);
    EXPECT_END(pid, 0, 0);
    return NULL;
}

static volatile int handler_hits;
static void h_count(int sig) {
    (void)sig;
    handler_hits++;
}

/* Writing to a pipe with no reader: with SIGPIPE ignored (or handled) the write fails with EPIPE. */
CHECK(c_pipe_epipe) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    close(p[0]);
    EXPECT(signal(SIGPIPE, SIG_IGN) != SIG_ERR, "signal_errno=%d", errno);
    EXPECT_ERRNO("write(no_reader,SIGPIPE_ignored)", write(p[1], "x", 1), EPIPE);
    struct iovec iov = {(void *)"yz", 2};
    EXPECT_ERRNO("writev(no_reader)", writev(p[1], &iov, 1), EPIPE);
    EXPECT(on(SIGPIPE, h_count, 0) == 0, "sigaction_errno=%d", errno);
    EXPECT_ERRNO("write(no_reader,SIGPIPE_handled)", write(p[1], "x", 1), EPIPE);
    EXPECT(handler_hits == 1, "SIGPIPE_handler_ran_%d_times_want_1", handler_hits);
    return NULL;
}

/* With SIGPIPE at its default, a process writing to a pipe without readers is killed by SIGPIPE. */
CHECK(c_pipe_sigpipe_kills_writer) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    close(p[0]);
    pid_t pid = spawn();
    EXPECT(pid >= 0, "fork_errno=%d", errno);
    if (pid == 0) {
        ssize_t w = write(p[1], "x", 1);
        (void)w;
        _exit(3);
    }
    EXPECT_END(pid, SIGPIPE, 0);
    return NULL;
}

/* ioctl FIONREAD: the bytes waiting in a pipe. */
CHECK(c_pipe_fionread) {
    int p[2], n = -1;
    EXPECT_RC("pipe", pipe(p), 0);
    EXPECT_RC("FIONREAD(empty)", ioctl(p[0], FIONREAD, &n), 0);
    EXPECT(n == 0, "FIONREAD(empty)=%d", n);
    EXPECT_RC("write", write(p[1], "0123456789", 10), 10);
    EXPECT_RC("FIONREAD", ioctl(p[0], FIONREAD, &n), 0);
    EXPECT(n == 10, "FIONREAD=%d_want_10", n);
    char buf[4];
    EXPECT_RC("read", read(p[0], buf, 4), 4);
    EXPECT_RC("FIONREAD_after_read", ioctl(p[0], FIONREAD, &n), 0);
    EXPECT(n == 6, "FIONREAD_after_read=%d_want_6", n);
    return NULL;
}

/* A reader blocked in read on an empty pipe is woken by a write from another process. */
CHECK(c_pipe_reader_woken) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    long long t0 = now_ns();
    pid_t pid = spawn();
    EXPECT(pid >= 0, "fork_errno=%d", errno);
    if (pid == 0) {
        sleep_ms(100);
        _exit(write(p[1], "wake", 4) == 4 ? 0 : 3);
    }
    char buf[8] = {0};
    step("blocked_read");
    EXPECT_RC("read", read(p[0], buf, sizeof buf), 4);
    EXPECT(strcmp(buf, "wake") == 0, "read_'%s'", buf);
    EXPECT(ms_since(t0) >= 100, "read_returned_after_%lldms_before_the_write", ms_since(t0));
    EXPECT_END(pid, 0, 0);
    return NULL;
}

/* A child that signals its parent (SIGUSR1) every 20 ms until sh[0] is set, at most 4 s; then writes `data` to
 * `fd` (if not NULL) and exits. */
static void signaller(volatile int *sh, int fd, const char *data, int rounds) {
    pid_t parent = getppid();
    for (int i = 0; i < 200 && !load(&sh[0]) && i < rounds; i++) {
        sleep_ms(20);
        kill(parent, SIGUSR1);
    }
    if (data) {
        sleep_ms(20);
        ssize_t w = write(fd, data, strlen(data));
        (void)w;
    }
    _exit(0);
}

/* A read blocked on an empty pipe is interrupted by a handled signal (no SA_RESTART): -1 with EINTR. */
CHECK(c_pipe_read_eintr) {
    volatile int *sh = shared_page();
    EXPECT(sh, "mmap_errno=%d", errno);
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    EXPECT(on(SIGUSR1, h_count, 0) == 0, "sigaction_errno=%d", errno);
    pid_t pid = spawn();
    EXPECT(pid >= 0, "fork_errno=%d", errno);
    if (pid == 0)
        signaller(sh, -1, NULL, 200);
    char c;
    step("blocked_read");
    errno = 0;
    ssize_t r = read(p[0], &c, 1);
    int e = errno;
    store(&sh[0], 1);
    EXPECT(r == -1 && e == EINTR, "read=%zd_errno=%d_want_-1_EINTR", r, e);
    EXPECT(handler_hits >= 1, "handler_never_ran");
    EXPECT_END(pid, 0, 0);
    return NULL;
}

/* With SA_RESTART the interrupted read resumes after the handler and returns the data written later. */
CHECK(c_pipe_read_sa_restart) {
    volatile int *sh = shared_page();
    EXPECT(sh, "mmap_errno=%d", errno);
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    EXPECT(on(SIGUSR1, h_count, SA_RESTART) == 0, "sigaction_errno=%d", errno);
    pid_t pid = spawn();
    EXPECT(pid >= 0, "fork_errno=%d", errno);
    if (pid == 0)
        signaller(sh, p[1], "after-signals", 5);
    char buf[32] = {0};
    step("blocked_read");
    errno = 0;
    ssize_t r = read(p[0], buf, sizeof buf - 1);
    int e = errno;
    store(&sh[0], 1);
    EXPECT(r == 13, "read=%zd_errno=%d_want_13_bytes", r, e);
    EXPECT(strcmp(buf, "after-signals") == 0, "read_'%s'", buf);
    EXPECT(handler_hits >= 1, "handler_never_ran");
    EXPECT_END(pid, 0, 0);
    return NULL;
}

/* 1 MiB through a pipe between two processes (the writer blocks when it is full and is woken as the reader
 * drains it): every byte arrives once, in order, then end of file. */
CHECK(c_pipe_large_transfer) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    const long total = 1L << 20;
    pid_t pid = spawn();
    EXPECT(pid >= 0, "fork_errno=%d", errno);
    if (pid == 0) {
        close(p[0]);
        static unsigned char buf[7000];
        for (long off = 0; off < total;) {
            long n = total - off < (long)sizeof buf ? total - off : (long)sizeof buf;
            for (long i = 0; i < n; i++)
                buf[i] = (unsigned char)((off + i) % 253);
            ssize_t w = write(p[1], buf, (size_t)n);
            if (w <= 0)
                _exit(3);
            off += w;
        }
        _exit(0);
    }
    close(p[1]);
    static unsigned char buf[3000];
    long pos = 0;
    for (;;) {
        ssize_t r = read(p[0], buf, sizeof buf);
        EXPECT(r >= 0, "read_errno=%d", errno);
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            EXPECT(buf[i] == (unsigned char)((pos + i) % 253), "byte_%ld_wrong", (long)(pos + i));
        pos += r;
    }
    EXPECT(pos == total, "got_%ld_bytes_want_%ld", pos, total);
    EXPECT_END(pid, 0, 0);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* poll and select on pipes */

/* poll with timeout 0: an empty pipe's read end has nothing (poll returns 0), its write end POLLOUT; data gives
 * POLLIN; the writer gone gives POLLHUP (with POLLIN while data is left); a closed descriptor POLLNVAL; a
 * negative descriptor is skipped. */
CHECK(c_poll_pipe_states) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    struct pollfd r = {p[0], POLLIN, 0}, w = {p[1], POLLOUT, 0};
    EXPECT_RC("poll(empty_read_end,0)", poll(&r, 1, 0), 0);
    EXPECT(r.revents == 0, "empty_pipe_revents=%#x", r.revents);
    EXPECT_RC("poll(write_end,0)", poll(&w, 1, 0), 1);
    EXPECT(w.revents == POLLOUT, "write_end_revents=%#x_want_POLLOUT", w.revents);
    EXPECT_RC("write", write(p[1], "ab", 2), 2);
    EXPECT_RC("poll(read_end_with_data)", poll(&r, 1, 0), 1);
    EXPECT(r.revents == POLLIN, "with_data_revents=%#x_want_POLLIN", r.revents);
    struct pollfd both[3] = {{p[0], POLLIN, 0}, {-1, POLLIN, 0x55}, {p[1], POLLOUT, 0}};
    EXPECT_RC("poll(3_entries)", poll(both, 3, 0), 2);
    EXPECT(both[1].revents == 0, "negative_fd_revents=%#x", both[1].revents);
    close(p[1]);
    EXPECT_RC("poll(writer_closed,data_left)", poll(&r, 1, 0), 1);
    EXPECT(r.revents == (POLLIN | POLLHUP), "writer_closed_with_data_revents=%#x_want_POLLIN|POLLHUP", r.revents);
    char buf[4];
    EXPECT_RC("read", read(p[0], buf, sizeof buf), 2);
    EXPECT_RC("poll(writer_closed,empty)", poll(&r, 1, 0), 1);
    EXPECT(r.revents == POLLHUP, "writer_closed_revents=%#x_want_POLLHUP", r.revents);
    struct pollfd bad = {NO_SUCH_FD, POLLIN, 0};
    EXPECT_RC("poll(closed_fd)", poll(&bad, 1, 0), 1);
    EXPECT(bad.revents == POLLNVAL, "closed_fd_revents=%#x_want_POLLNVAL", bad.revents);
    return NULL;
}

/* The write end of a pipe whose reader is gone reports POLLERR, even when no events were asked for. */
CHECK(c_poll_pollerr_no_reader) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    close(p[0]);
    struct pollfd w = {p[1], POLLOUT, 0};
    EXPECT_RC("poll", poll(&w, 1, 0), 1);
    EXPECT(w.revents & POLLERR, "no_reader_revents=%#x_lacks_POLLERR", w.revents);
    w.events = 0;
    w.revents = 0;
    EXPECT_RC("poll(events_0)", poll(&w, 1, 0), 1);
    EXPECT(w.revents == POLLERR, "no_reader_events_0_revents=%#x_want_POLLERR", w.revents);
    return NULL;
}

/* A full pipe's write end is not writable (poll: no POLLOUT; select: not in the write set) until a reader makes
 * room (a page). */
CHECK(c_poll_full_pipe) {
    int p[2];
    EXPECT_RC("pipe2(O_NONBLOCK)", pipe2(p, O_NONBLOCK), 0);
    static char chunk[4096];
    long total = 0;
    while (write(p[1], chunk, sizeof chunk) == (ssize_t)sizeof chunk)
        EXPECT((total += 4096) <= (16L << 20), "pipe_never_fills");
    EXPECT(errno == EAGAIN, "filling_write_errno=%d", errno);
    struct pollfd w = {p[1], POLLOUT, 0};
    EXPECT_RC("poll(full_pipe,POLLOUT)", poll(&w, 1, 0), 0);
    EXPECT(w.revents == 0, "full_pipe_revents=%#x", w.revents);
    fd_set wr;
    FD_ZERO(&wr);
    FD_SET(p[1], &wr);
    struct timeval tv = {0, 0};
    EXPECT_RC("select(full_pipe,write)", select(p[1] + 1, NULL, &wr, NULL, &tv), 0);
    EXPECT_RC("read(4096)", read(p[0], chunk, sizeof chunk), 4096);
    EXPECT_RC("poll(after_read)", poll(&w, 1, 0), 1);
    EXPECT(w.revents == POLLOUT, "revents_after_read=%#x_want_POLLOUT", w.revents);
    return NULL;
}

/* poll: an fds pointer into unmapped memory EFAULT; more entries than RLIMIT_NOFILE EINVAL. */
CHECK(c_poll_errors) {
    uintptr_t h = hole();
    EXPECT(h, "no_hole_errno=%d", errno);
    EXPECT_ERRNO("poll(bad_pointer)", syscall(SYS_poll, h, 1, 0), EFAULT);
    struct rlimit rl;
    EXPECT(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit_errno=%d", errno);
    struct pollfd one = {0, POLLIN, 0};
    EXPECT_ERRNO("poll(nfds_above_RLIMIT_NOFILE)", syscall(SYS_poll, &one, (long)rl.rlim_cur + 1, 0), EINVAL);
    return NULL;
}

/* poll waits: an empty pipe with a timeout returns 0 after at least that long; a write from another process ends
 * the wait with POLLIN. */
CHECK(c_poll_waits) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    struct pollfd r = {p[0], POLLIN, 0};
    long long t0 = now_ns();
    EXPECT_RC("poll(empty,100ms)", poll(&r, 1, 100), 0);
    EXPECT(ms_since(t0) >= 99, "poll(100ms)_returned_after_%lldms", ms_since(t0));
    t0 = now_ns();
    pid_t pid = spawn();
    EXPECT(pid >= 0, "fork_errno=%d", errno);
    if (pid == 0) {
        sleep_ms(100);
        _exit(write(p[1], "x", 1) == 1 ? 0 : 3);
    }
    step("poll_wait_for_writer");
    EXPECT_RC("poll(5000ms)", poll(&r, 1, 5000), 1);
    EXPECT(r.revents == POLLIN, "revents=%#x_want_POLLIN", r.revents);
    EXPECT(ms_since(t0) >= 100 && ms_since(t0) < 4000, "poll_returned_after_%lldms", ms_since(t0));
    EXPECT_END(pid, 0, 0);
    return NULL;
}

/* select: an empty pipe times out (0, the set cleared); after a write the read end is readable; the write end is
 * writable; a closed descriptor in a set EBADF; a negative nfds EINVAL. */
CHECK(c_select_pipe) {
    int p[2];
    EXPECT_RC("pipe", pipe(p), 0);
    fd_set rd, wr;
    FD_ZERO(&rd);
    FD_SET(p[0], &rd);
    struct timeval tv = {0, 50000};
    long long t0 = now_ns();
    EXPECT_RC("select(empty,50ms)", select(p[0] + 1, &rd, NULL, NULL, &tv), 0);
    EXPECT(ms_since(t0) >= 49, "select(50ms)_returned_after_%lldms", ms_since(t0));
    EXPECT(!FD_ISSET(p[0], &rd), "timed-out_select_left_the_fd_set");
    EXPECT_RC("write", write(p[1], "x", 1), 1);
    FD_ZERO(&rd);
    FD_SET(p[0], &rd);
    FD_ZERO(&wr);
    FD_SET(p[1], &wr);
    tv.tv_sec = 1;
    tv.tv_usec = 0;
    int maxfd = p[0] > p[1] ? p[0] : p[1];
    EXPECT_RC("select(readable,writable)", select(maxfd + 1, &rd, &wr, NULL, &tv), 2);
    EXPECT(FD_ISSET(p[0], &rd) && FD_ISSET(p[1], &wr), "select_sets_wrong");
    FD_ZERO(&rd);
    FD_SET(p[0], &rd);
    tv.tv_sec = 0;
    EXPECT_RC("select(NULL_sets,timeout_0)", select(0, NULL, NULL, NULL, &tv), 0);
    /* a descriptor just closed (Linux ignores the bits of a set beyond its descriptor table: fd 99 would not do) */
    int closed;
    EXPECT_FD(closed, "dup", dup(p[0]));
    close(closed);
    fd_set bad;
    FD_ZERO(&bad);
    FD_SET(closed, &bad);
    tv.tv_sec = 0;
    tv.tv_usec = 0;
    EXPECT_ERRNO("select(closed_fd)", select(closed + 1, &bad, NULL, NULL, &tv), EBADF);
    EXPECT_ERRNO("select(nfds_-1)", syscall(SYS_select, -1, &rd, NULL, NULL, &tv), EINVAL);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* the descriptor limit */

/* Opening /dev/null over and over ends with EMFILE at RLIMIT_NOFILE (every descriptor below it); closing one
 * frees exactly that number; dup and pipe fail with EMFILE too. (If the limit this runs under is huge, as in some
 * containers, it is lowered to 1024 first, Linux's default.) */
CHECK(c_emfile) {
    struct rlimit rl;
    EXPECT(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit_errno=%d", errno);
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 65536) {
        rl.rlim_cur = 1024;
        EXPECT(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit_errno=%d", errno);
    }
    int limit = (int)rl.rlim_cur, highest = -1, count = 0;
    step("opening");
    for (;;) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd == -1) {
            EXPECT(errno == EMFILE, "open_failed_after_%d_with_errno=%d_want_EMFILE", count, errno);
            break;
        }
        EXPECT(fd < limit, "open_gave_fd_%d_at_or_above_the_limit_%d", fd, limit);
        if (fd > highest)
            highest = fd;
        EXPECT(++count <= limit, "more_than_%d_descriptors_open", limit);
    }
    EXPECT(highest == limit - 1, "highest_fd=%d_want_%d", highest, limit - 1);
    int p[2];
    EXPECT_ERRNO("dup(at_limit)", dup(highest), EMFILE);
    EXPECT_ERRNO("pipe(at_limit)", pipe(p), EMFILE);
    EXPECT_ERRNO("F_DUPFD(at_limit)", fcntl(highest, F_DUPFD, 0), EMFILE);
    int mid = highest - 5;
    EXPECT_RC("close(mid)", close(mid), 0);
    EXPECT_RC("open_after_close", open("/dev/null", O_RDONLY), mid);
    EXPECT_ERRNO("open_at_limit_again", open("/dev/null", O_RDONLY), EMFILE);
    step("closing");
    for (int fd = 3; fd < limit; fd++)
        close(fd);
    int fd;
    EXPECT_FD(fd, "open_after_closing_all", open("/dev/null", O_RDONLY));
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------- */
/* devices (null(4): /dev/null and /dev/zero; full(4); random(4)) */

/* stat of a device: a character device with this major and minor number. */
static const char *expect_chardev(const char *path, unsigned maj, unsigned min) {
    struct stat st;
    if (stat(path, &st) != 0)
        return fail("stat(%s)_errno=%d", path, errno);
    if (!S_ISCHR(st.st_mode))
        return fail("%s_mode=%#o_not_a_character_device", path, (unsigned)st.st_mode);
    unsigned got_maj = major(st.st_rdev), got_min = minor(st.st_rdev);
    if (got_maj != maj || got_min != min)
        return fail("%s_is_%u,%u_want_%u,%u", path, got_maj, got_min, maj, min);
    return NULL;
}

#define EXPECT_CHARDEV(path, maj, min)                                                                               \
    do {                                                                                                             \
        const char *why_ = expect_chardev(path, maj, min);                                                           \
        if (why_)                                                                                                    \
            return why_;                                                                                             \
    } while (0)

/* /dev/null swallows writes (the full count) and reads end of file. */
CHECK(c_dev_null) {
    EXPECT_CHARDEV("/dev/null", 1, 3);
    int fd;
    EXPECT_FD(fd, "open(/dev/null)", open("/dev/null", O_RDWR));
    static char buf[5000];
    EXPECT_RC("write", write(fd, buf, sizeof buf), (long)sizeof buf);
    EXPECT_RC("read", read(fd, buf, sizeof buf), 0);
    close(fd);
    return NULL;
}

/* /dev/zero reads zeros (the full count asked) and swallows writes. */
CHECK(c_dev_zero) {
    EXPECT_CHARDEV("/dev/zero", 1, 5);
    int fd;
    EXPECT_FD(fd, "open(/dev/zero)", open("/dev/zero", O_RDWR));
    static unsigned char buf[10000];
    memset(buf, 0xff, sizeof buf);
    EXPECT_RC("read", read(fd, buf, sizeof buf), (long)sizeof buf);
    for (size_t i = 0; i < sizeof buf; i++)
        EXPECT(buf[i] == 0, "byte_%zu=%#x", i, buf[i]);
    EXPECT_RC("write", write(fd, buf, 100), 100);
    close(fd);
    return NULL;
}

/* /dev/full: a write fails with ENOSPC; reads give zeros. */
CHECK(c_dev_full) {
    EXPECT_CHARDEV("/dev/full", 1, 7);
    int fd;
    EXPECT_FD(fd, "open(/dev/full)", open("/dev/full", O_RDWR));
    EXPECT_ERRNO("write(/dev/full)", write(fd, "x", 1), ENOSPC);
    unsigned char buf[64];
    memset(buf, 0xff, sizeof buf);
    EXPECT_RC("read", read(fd, buf, sizeof buf), (long)sizeof buf);
    for (size_t i = 0; i < sizeof buf; i++)
        EXPECT(buf[i] == 0, "byte_%zu=%#x", i, buf[i]);
    close(fd);
    return NULL;
}

/* /dev/urandom gives as many bytes as asked (up to 512 at least, without blocking), different each time; root may
 * write to it. */
CHECK(c_dev_urandom) {
    EXPECT_CHARDEV("/dev/urandom", 1, 9);
    int fd;
    EXPECT_FD(fd, "open(/dev/urandom)", open("/dev/urandom", O_RDWR));
    unsigned char a[64], b[64], c[512];
    EXPECT_RC("read(64)", read(fd, a, sizeof a), 64);
    EXPECT_RC("read(64)_again", read(fd, b, sizeof b), 64);
    EXPECT(memcmp(a, b, sizeof a) != 0, "two_reads_gave_the_same_64_bytes");
    EXPECT_RC("read(512)", read(fd, c, sizeof c), 512);
    EXPECT_RC("read(1)", read(fd, c, 1), 1);
    EXPECT_RC("write", write(fd, a, sizeof a), 64);
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
    {"read_write_efault", c_rw_efault},
    {"large_file_roundtrip", c_large_file_roundtrip},
    /* stat */
    {"stat_types_sizes", c_stat_types_sizes},
    {"newfstatat_nofollow_empty_path", c_newfstatat_flags},
    {"statx_basics", c_statx_basics},
    {"statx_errors", c_statx_errors},
    {"dir_nlink", c_dir_nlink},
    /* directories */
    {"readdir_entries", c_readdir_entries},
    {"getdents64_many", c_getdents64_many},
    {"mkdir_errors", c_mkdir_errors},
    {"rmdir_errors", c_rmdir_errors},
    {"unlink_errors", c_unlink_errors},
    {"unlink_open_file", c_unlink_open_file},
    /* rename */
    {"rename_replace_file", c_rename_replace_file},
    {"rename_directories", c_rename_directories},
    {"renameat2_noreplace_exchange", c_renameat2_flags},
    /* links */
    {"link_nlink", c_link_nlink},
    {"symlink_readlink", c_symlink_readlink},
    {"symlink_loop_eloop", c_symlink_loop},
    /* cwd, access, modes, times */
    {"chdir_getcwd", c_chdir_getcwd},
    {"getcwd_removed_dir", c_getcwd_removed_dir},
    {"access_faccessat", c_access_faccessat},
    {"chmod_fchmod", c_chmod_fchmod},
    {"umask", c_umask},
    {"utimensat_times", c_utimensat_times},
    {"fsync_statfs", c_fsync_statfs},
    /* descriptors */
    {"dup_shared_offset", c_dup_shared_offset},
    {"dup2_dup3", c_dup2_dup3},
    {"dup_clears_cloexec", c_dup_clears_cloexec},
    {"fcntl_dupfd", c_fcntl_dupfd},
    {"fcntl_getfl_setfl", c_fcntl_getfl_setfl},
    {"fcntl_errors", c_fcntl_errors},
    {"fork_shares_offset", c_fork_shares_offset},
    /* pipes */
    {"pipe_basic", c_pipe_basic},
    {"pipe2_flags", c_pipe2_flags},
    {"pipe_full_eagain", c_pipe_full_eagain},
    {"pipe_eof_last_writer", c_pipe_eof_last_writer},
    {"pipe_epipe", c_pipe_epipe},
    {"pipe_sigpipe_kills_writer", c_pipe_sigpipe_kills_writer},
    {"pipe_fionread", c_pipe_fionread},
    {"pipe_reader_woken", c_pipe_reader_woken},
    {"pipe_read_eintr", c_pipe_read_eintr},
    {"pipe_read_sa_restart", c_pipe_read_sa_restart},
    {"pipe_large_transfer", c_pipe_large_transfer},
    /* poll, select */
    {"poll_pipe_states", c_poll_pipe_states},
    {"poll_pollerr_no_reader", c_poll_pollerr_no_reader},
    {"poll_full_pipe", c_poll_full_pipe},
    {"poll_errors", c_poll_errors},
    {"poll_waits", c_poll_waits},
    {"select_pipe", c_select_pipe},
    /* limits */
    {"emfile", c_emfile},
    /* devices */
    {"dev_null", c_dev_null},
    {"dev_zero", c_dev_zero},
    {"dev_full", c_dev_full},
    {"dev_urandom", c_dev_urandom},
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
