/* bulkread.c: see bulkread.h. One persistent EV_READ event on the bufferevent's socket. */
#include "bulkread.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

struct bulkread {
    struct event *ev;
    struct bufferevent *bev;
    void (*on_read)(struct bufferevent *bev, void *arg);
    void (*on_event)(struct bufferevent *bev, short what, void *arg);
    void *arg;
    int enabled, done;
};

static void
reader_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bulkread *r = arg;
    struct evbuffer *in = bufferevent_get_input(r->bev);
    struct evbuffer_iovec v[2];
    struct iovec io[2];
    ssize_t got;
    size_t left;
    int n, i, e;

    (void)what;
    /* A socket bufferevent freezes its input's end outside its own reads; so do we. */
    evbuffer_unfreeze(in, 0);
    n = evbuffer_reserve_space(in, BULKREAD_MAX, v, 2);
    if (n <= 0) {
        evbuffer_freeze(in, 0);
        errno = ENOMEM;
        r->done = 1;
        bulkread_disable(r);
        r->on_event(r->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, r->arg);
        return;
    }
    for (i = 0; i < n; i++) {
        io[i].iov_base = v[i].iov_base;
        io[i].iov_len = v[i].iov_len;
    }
    got = readv(fd, io, n);
    e = errno;
    if (got > 0) {
        left = (size_t)got;
        for (i = 0; i < n; i++) {
            if (v[i].iov_len > left) v[i].iov_len = left;
            left -= v[i].iov_len;
        }
        evbuffer_commit_space(in, v, n);
        evbuffer_freeze(in, 0);
        r->on_read(r->bev, r->arg);
        return;
    }
    evbuffer_commit_space(in, v, 0);
    evbuffer_freeze(in, 0);
    if (got == -1 && (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)) return;
    r->done = 1;
    bulkread_disable(r);
    errno = e;
    EVUTIL_SET_SOCKET_ERROR(e);
    r->on_event(r->bev, BEV_EVENT_READING | (got == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), r->arg);
}

struct bulkread *
bulkread_new(struct event_base *base, struct bufferevent *bev,
             void (*on_read)(struct bufferevent *bev, void *arg),
             void (*on_event)(struct bufferevent *bev, short what, void *arg), void *arg)
{
    struct bulkread *r = calloc(1, sizeof(*r));

    if (r == NULL) return NULL;
    r->bev = bev;
    r->on_read = on_read;
    r->on_event = on_event;
    r->arg = arg;
    r->ev = event_new(base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, reader_cb, r);
    if (r->ev == NULL) {
        free(r);
        return NULL;
    }
    bufferevent_disable(bev, EV_READ);
    return r;
}

void
bulkread_enable(struct bulkread *r)
{
    if (r->enabled || r->done) return;
    r->enabled = 1;
    event_add(r->ev, NULL);
}

void
bulkread_disable(struct bulkread *r)
{
    if (!r->enabled) return;
    r->enabled = 0;
    event_del(r->ev);
}

void
bulkread_free(struct bulkread *r)
{
    if (r == NULL) return;
    event_free(r->ev);
    free(r);
}
