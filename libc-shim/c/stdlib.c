/* questv libc shim: malloc/free (first fit over sbrk, blocks coalesced on free) and number parsing. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct block {
    size_t size; /* payload bytes */
    int free;
    struct block *next;
};

static struct block *head;
#define ALIGN16(n) (((n) + 15) & ~(size_t)15)
#define HDR ALIGN16(sizeof(struct block))

void *malloc(size_t n) {
    if (n == 0) n = 1;
    n = ALIGN16(n);
    struct block *b = head, *last = 0;
    for (; b; last = b, b = b->next) {
        if (b->free && b->size >= n) {
            if (b->size >= n + HDR + 16) { /* split */
                struct block *rest = (struct block *)((char *)b + HDR + n);
                rest->size = b->size - n - HDR;
                rest->free = 1;
                rest->next = b->next;
                b->next = rest;
                b->size = n;
            }
            b->free = 0;
            return (char *)b + HDR;
        }
    }
    b = sbrk((long)(HDR + n));
    if (b == (void *)-1) return 0;
    b->size = n;
    b->free = 0;
    b->next = 0;
    if (last) last->next = b;
    else head = b;
    return (char *)b + HDR;
}

void free(void *p) {
    if (!p) return;
    struct block *b = (struct block *)((char *)p - HDR);
    b->free = 1;
    /* Coalesce runs of free neighbours (blocks are in address order: sbrk only grows). */
    for (b = head; b; b = b->next)
        while (b->free && b->next && b->next->free && (char *)b + HDR + b->size == (char *)b->next) {
            b->size += HDR + b->next->size;
            b->next = b->next->next;
        }
}

void *calloc(size_t n, size_t size) {
    if (size && n > (size_t)-1 / size) return 0;
    void *p = malloc(n * size);
    if (p) memset(p, 0, n * size);
    return p;
}

void *realloc(void *p, size_t n) {
    if (!p) return malloc(n);
    struct block *b = (struct block *)((char *)p - HDR);
    if (b->size >= n) return p;
    void *q = malloc(n);
    if (q) {
        memcpy(q, p, b->size);
        free(p);
    }
    return q;
}

long strtol(const char *s, char **end, int base) {
    while (*s == ' ' || *s == '\t' || *s == '\n') s++;
    int neg = 0;
    if (*s == '-' || *s == '+') neg = *s++ == '-';
    if ((base == 0 || base == 16) && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        base = 16;
    } else if (base == 0)
        base = s[0] == '0' ? 8 : 10;
    long v = 0;
    for (;; s++) {
        int d = *s >= '0' && *s <= '9' ? *s - '0' : *s >= 'a' && *s <= 'z' ? *s - 'a' + 10 : *s >= 'A' && *s <= 'Z' ? *s - 'A' + 10 : 99;
        if (d >= base) break;
        v = v * base + d;
    }
    if (end) *end = (char *)s;
    return neg ? -v : v;
}

long atol(const char *s) { return strtol(s, 0, 10); }
int atoi(const char *s) { return (int)strtol(s, 0, 10); }
