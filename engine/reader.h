/* reader.h: large reads for a plain socket bufferevent. libevent 2.1's socket bufferevent reads
 * at most 4096 bytes per wakeup (EVBUFFER_MAX_READ; evbuffer_set_max_read is 2.2 only), which
 * costs an epoll round per 4 KiB of bulk data. A reader owns the read side instead: one readv()
 * of up to READER_MAX bytes per wakeup straight into the bufferevent's input buffer. The
 * bufferevent keeps writing, connecting and reporting write errors; its EV_READ stays off. */
#ifndef TUNNELS_READER_H
#define TUNNELS_READER_H

struct bufferevent;
struct event_base;
struct reader;

#define READER_MAX (256 * 1024)

/* on_read: new bytes are in the bufferevent's input. on_event: BEV_EVENT_READING with
 * BEV_EVENT_EOF (reading stops) or BEV_EVENT_ERROR (errno is the socket error). Both get arg. */
struct reader *reader_new(struct event_base *base, struct bufferevent *bev,
                          void (*on_read)(struct bufferevent *bev, void *arg),
                          void (*on_event)(struct bufferevent *bev, short what, void *arg),
                          void *arg);
void reader_enable(struct reader *r);
void reader_disable(struct reader *r);
void reader_free(struct reader *r);

#endif
