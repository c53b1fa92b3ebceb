/* writethrough.h: write-through for socket bufferevents. A bufferevent writes on its next EV_WRITE
 * event: an epoll_ctl to watch for it, a loop pass, another epoll_ctl to stop. When nothing is
 * queued yet, the socket almost always takes the bytes at once, so write them now and queue
 * only what it refused. Order holds: bytes are written directly only when none are queued. */
#ifndef TUNNELS_WRITETHROUGH_H
#define TUNNELS_WRITETHROUGH_H

#include <stddef.h>

struct bufferevent;
struct evbuffer;

/* 1 when the libevent running is of the series writethrough.c was built against; else 0 with
 * err saying so (struct bufferevent's layout is libevent's own). */
int writethrough_libevent_ok(char *err, size_t errlen);

/* Writes n bytes of data to bev's socket now if its output is empty, queues the rest. Returns
 * how many were written directly (they never pass the output buffer or its callbacks). Errors
 * are left to the bufferevent: what failed is queued, and its own write reports the error. */
size_t writethrough_write(struct bufferevent *bev, const void *data, size_t n);

/* The same for n bytes drained from src; what is queued is copied (see writethrough.c why). */
size_t writethrough_move(struct bufferevent *bev, struct evbuffer *src, size_t n);

/* Writes what sock's output holds, as far as the socket takes it, now; sock's events are left
 * as they are. Returns evbuffer_write's result (-1 with errno: EAGAIN, EINPROGRESS, an error). */
int writethrough_send_queued(struct bufferevent *sock);

/* Writes what sock's output already holds now instead of on its next EV_WRITE, as libevent's
 * own write would (the write callback follows); an output it empties leaves no EV_WRITE armed.
 * For a socket bufferevent that is connected. */
void writethrough_flush(struct bufferevent *sock);

#endif
