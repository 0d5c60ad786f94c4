#ifndef QUESTV_STDIO_H
#define QUESTV_STDIO_H
#include <stddef.h>
#include <stdarg.h>
/* printf subset: %d %i %u %x %X %o %p %s %c %%, with l/ll/z/h length, width, '-', '0' and precision for %s. */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int snprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t n, const char *fmt, va_list ap);
int vprintf(const char *fmt, va_list ap);
int puts(const char *s);
int putchar(int c);
#endif
