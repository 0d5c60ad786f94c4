#ifndef QUESTV_SYS_TYPES_H
#define QUESTV_SYS_TYPES_H
#include <stddef.h>
typedef int pid_t;
#endif
