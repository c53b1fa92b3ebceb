/* writethrough.c: see writethrough.h. */
#include "writethrough.h"

#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h> /* ev_write, see writethrough_flush */
#include <event2/event.h>

/* struct bufferevent is libevent's own (bufferevent_struct.h says so: it may change). The field
 * used here is checked against the 2.1 series at build time, and main.c refuses to start on a
 * run-time libevent of another series than the one built against (writethrough_libevent_ok). */
#if LIBEVENT_VERSION_NUMBER < 0x02010000 || LIBEVENT_VERSION_NUMBER >= 0x02020000
#error "writethrough.c uses struct bufferevent's ev_write as libevent 2.1 lays it out: check it"
#endif

int
writethrough_libevent_ok(char *err, size_t errlen)
{
    ev_uint32_t run = event_get_version_number();

    if ((run >> 16) == (LIBEVENT_VERSION_NUMBER >> 16)) return 1;
    snprintf(err, errlen,
             "tunnels: built against libevent %s, running with %s: rebuild (writethrough.c "
             "uses a struct of libevent's own)",
             LIBEVENT_VERSION, event_get_version());
    return 0;
}

static int
writable_now(struct bufferevent *bev)
{
    return bufferevent_getfd(bev) >= 0 && evbuffer_get_length(bufferevent_get_output(bev)) == 0;
}

/* Queued bytes are copied into the output's own chains, not moved as src's chains: a moved
 * chain keeps its unused tail, and a TLS connection's input is cut into chains a record at a
 * time, so a stalled reader's queue cost up to twice its window. Copies happen only while the
 * reader lags; a reader that keeps up gets the bytes straight from src. */
static void
queue_copy(struct evbuffer *out, struct evbuffer *src, size_t n)
{
    struct evbuffer_iovec v[2];
    int k, i;

    k = evbuffer_reserve_space(out, (ev_ssize_t)n, v, 2);
    if (k <= 0) {
        evbuffer_remove_buffer(src, out, n); /* out of memory: move what we can */
        return;
    }
    for (i = 0; i < k; i++) {
        if (v[i].iov_len > n) v[i].iov_len = n;
        evbuffer_remove(src, v[i].iov_base, v[i].iov_len);
        n -= v[i].iov_len;
    }
    evbuffer_commit_space(out, v, k);
}

size_t
writethrough_write(struct bufferevent *bev, const void *data, size_t n)
{
    ssize_t w = 0;

    if (n > 0 && writable_now(bev)) {
        w = write(bufferevent_getfd(bev), data, n);
        if (w < 0) w = 0; /* EAGAIN, or an error the bufferevent reports when it writes */
    }
    if ((size_t)w < n) bufferevent_write(bev, (const char *)data + w, n - (size_t)w);
    return (size_t)w;
}

size_t
writethrough_move(struct bufferevent *bev, struct evbuffer *src, size_t n)
{
    int w = 0;

    if (n > 0 && writable_now(bev)) {
        w = evbuffer_write_atmost(src, bufferevent_getfd(bev), (ev_ssize_t)n);
        if (w < 0) w = 0;
    }
    if ((size_t)w < n) queue_copy(bufferevent_get_output(bev), src, n - (size_t)w);
    return (size_t)w;
}

int
writethrough_send_queued(struct bufferevent *sock)
{
    struct evbuffer *out = bufferevent_get_output(sock);
    int fd = bufferevent_getfd(sock), w;

    if (fd < 0 || evbuffer_get_length(out) == 0) return 0;
    /* A socket bufferevent freezes its output's front outside its own writes. */
    evbuffer_unfreeze(out, 1);
    w = evbuffer_write(out, fd);
    evbuffer_freeze(out, 1);
    return w;
}

void
writethrough_flush(struct bufferevent *sock)
{
    struct evbuffer *out = bufferevent_get_output(sock);

    if (writethrough_send_queued(sock) <= 0) return; /* EAGAIN, or an error its own write reports */
    /* Emptied: the EV_WRITE that adding the bytes armed has nothing left to write. Deleted in
     * the pass that armed it, it never reaches epoll (the base's changelist, main.c). No
     * function of libevent's does this without re-arming it, hence the struct's field. */
    if (evbuffer_get_length(out) == 0) event_del(&sock->ev_write);
    /* Then what libevent's own write does: the write callback, if the output is below its low
     * watermark (above a TLS filter: encrypt what waits for room). */
    bufferevent_trigger(sock, EV_WRITE, 0);
}
