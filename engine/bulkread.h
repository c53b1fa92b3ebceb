/* bulkread.h: large reads for a plain socket bufferevent. libevent 2.1's socket bufferevent reads
 * at most 4096 bytes per wakeup (EVBUFFER_MAX_READ; evbuffer_set_max_read is 2.2 only), which
 * costs an epoll round per 4 KiB of bulk data. A bulk reader owns the read side instead: one
 * readv() of up to BULKREAD_MAX bytes per wakeup straight into the bufferevent's input buffer. The
 * bufferevent keeps writing, connecting and reporting write errors; its EV_READ stays off. */
#ifndef TUNNELS_BULKREAD_H
#define TUNNELS_BULKREAD_H

struct bufferevent;
struct event_base;
struct bulkread;

#define BULKREAD_MAX (256 * 1024)

/* on_read: new bytes are in the bufferevent's input. on_event: BEV_EVENT_READING with
 * BEV_EVENT_EOF (reading stops) or BEV_EVENT_ERROR (errno is the socket error). Both get arg. */
struct bulkread *bulkread_new(struct event_base *base, struct bufferevent *bev,
                              void (*on_read)(struct bufferevent *bev, void *arg),
                              void (*on_event)(struct bufferevent *bev, short what, void *arg),
                              void *arg);
void bulkread_enable(struct bulkread *r);
void bulkread_disable(struct bulkread *r);
void bulkread_free(struct bulkread *r);

#endif
