#ifndef QUESTV_ERRNO_H
#define QUESTV_ERRNO_H
extern int errno;
#define ENOENT 2
#define ESRCH 3
#define E2BIG 7
#define ENOEXEC 8
#define EBADF 9
#define ECHILD 10
#define EAGAIN 11
#define ENOMEM 12
#define EFAULT 14
#define EBUSY 16
#define ENODEV 19
#define EINVAL 22
#define ENOSYS 38
#endif
