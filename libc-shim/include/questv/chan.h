/* Channels (docs/channels.md): shared-memory message rings between sandboxes (VT) or cores (SMP). Each call
   returns a negative errno on failure (-EAGAIN: the peer has not opened yet, -ETIMEDOUT, -EBADF, ...). Same
   calls as questv_libc_shim::chan. */
#ifndef QUESTV_CHAN_H
#define QUESTV_CHAN_H
#include <questv/syscall.h>

/* send: notify the peer with an IPI; recv: wait for one, halted, instead of polling. */
#define QUESTV_CHAN_NOTIFY 1

/* This side's endpoint number (the sandbox, or the core on SMP). */
static inline long questv_chan_endpoint(void) { return questv_syscall(SYS_chan_endpoint, 0, 0, 0, 0, 0, 0); }
/* Open the channel to endpoint `peer`: a handle. */
static inline long questv_chan_open(long peer) { return questv_syscall(SYS_chan_open, peer, 0, 0, 0, 0, 0); }
static inline long questv_chan_send(long h, const void *data, long len, long flags) {
    return questv_syscall(SYS_chan_send, h, (long)data, len, flags, 0, 0);
}
/* One message into buf (at most len bytes) within timeout_ns: its length. */
static inline long questv_chan_recv(long h, void *buf, long len, long timeout_ns, long flags) {
    return questv_syscall(SYS_chan_recv, h, (long)buf, len, timeout_ns, flags, 0);
}
static inline long questv_chan_close(long h) { return questv_syscall(SYS_chan_close, h, 0, 0, 0, 0, 0); }
#endif
