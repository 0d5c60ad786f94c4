/* questv libc shim: printf subset (see stdio.h) over write(1). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct out {
    char *buf;
    size_t cap, len;
};

static void put(struct out *o, char c) {
    if (o->len + 1 < o->cap) o->buf[o->len] = c;
    o->len++;
}

static void put_num(struct out *o, unsigned long long v, int base, int upper, int neg, int width, int zero, int left) {
    char tmp[24];
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    int n = 0;
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    int len = n + neg;
    if (!left && !zero)
        for (; width > len; width--) put(o, ' ');
    if (neg) put(o, '-');
    if (!left && zero)
        for (; width > len; width--) put(o, '0');
    while (n) put(o, tmp[--n]);
    if (left)
        for (; width > len; width--) put(o, ' ');
}

int vsnprintf(char *buf, size_t cap, const char *f, va_list ap) {
    struct out o = {buf, cap, 0};
    for (; *f; f++) {
        if (*f != '%') {
            put(&o, *f);
            continue;
        }
        f++;
        int left = 0, zero = 0, width = 0, prec = -1, lng = 0;
        for (;; f++) {
            if (*f == '-') left = 1;
            else if (*f == '0') zero = 1;
            else break;
        }
        if (*f == '*') {
            width = va_arg(ap, int);
            f++;
        } else
            while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
        if (*f == '.') {
            f++;
            prec = 0;
            while (*f >= '0' && *f <= '9') prec = prec * 10 + (*f++ - '0');
        }
        while (*f == 'l' || *f == 'z' || *f == 'h') {
            if (*f != 'h') lng++;
            f++;
        }
        switch (*f) {
        case 'd':
        case 'i': {
            long long v = lng ? va_arg(ap, long long) : va_arg(ap, int);
            unsigned long long u = v < 0 ? -(unsigned long long)v : (unsigned long long)v;
            put_num(&o, u, 10, 0, v < 0, width, zero, left);
            break;
        }
        case 'u':
        case 'x':
        case 'X':
        case 'o': {
            unsigned long long v = lng ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
            int base = *f == 'u' ? 10 : *f == 'o' ? 8 : 16;
            put_num(&o, v, base, *f == 'X', 0, width, zero, left);
            break;
        }
        case 'p':
            put(&o, '0');
            put(&o, 'x');
            put_num(&o, (unsigned long long)va_arg(ap, void *), 16, 0, 0, width, zero, left);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            int n = (int)strlen(s);
            if (prec >= 0 && n > prec) n = prec;
            if (!left)
                for (; width > n; width--) put(&o, ' ');
            for (int i = 0; i < n; i++) put(&o, s[i]);
            if (left)
                for (; width > n; width--) put(&o, ' ');
            break;
        }
        case 'c':
            put(&o, (char)va_arg(ap, int));
            break;
        case '%':
            put(&o, '%');
            break;
        case 0:
            f--;
            break;
        default:
            put(&o, '%');
            put(&o, *f);
        }
    }
    if (cap) buf[o.len < cap ? o.len : cap - 1] = 0;
    return (int)o.len;
}

int snprintf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return r;
}

int vprintf(const char *fmt, va_list ap) {
    char buf[1024];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    write(1, buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1);
    return n;
}

int printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vprintf(fmt, ap);
    va_end(ap);
    return r;
}

int puts(const char *s) {
    write(1, s, strlen(s));
    write(1, "\n", 1);
    return 0;
}

int putchar(int c) {
    char ch = (char)c;
    write(1, &ch, 1);
    return c;
}
