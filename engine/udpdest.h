/* udpdest.h: the destinations of one UDP session (server) or association (client), and the
 * sockets that reach them. Each destination's verdict is asked once and kept (the route hook or
 * the ACL); its address is resolved once (evdns); while it resolves, at most UDPDEST_HOLD_N
 * datagrams wait. At most UDPDEST_MAX of them per table: the least recently used that is not
 * resolving makes room. The table sends from its own non-blocking UDP sockets (one per address
 * family, made on first use) and hands the owner what comes back, naming the destination it came
 * from: a reply from an address it never sent to is a stranger's (the owner drops it). */
#ifndef TUNNELS_UDPDEST_H
#define TUNNELS_UDPDEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "socks.h"

#define UDPDEST_MAX 64
/* New destinations a table takes per second: each costs a hook call and maybe a lookup, and a
 * peer that names a new one in every datagram must not buy them at a datagram's price. */
#define UDPDEST_NEW_PER_SEC 256
#define UDPDEST_HOLD_N 8         /* datagrams held per destination while its name resolves */
#define UDPDEST_HOLD_BYTES 16384 /* ... and their bytes */

struct evdns_base;
struct evbuffer;
struct udpdest_table;

enum udpdest_state {
    UDPDEST_NEW,       /* just made: the owner asks its verdict, then udpdest_resolve */
    UDPDEST_RESOLVING, /* a name being resolved */
    UDPDEST_READY,     /* sa holds its address */
    UDPDEST_FAILED,    /* the name did not resolve (why) */
};

struct udpdest {
    struct socks_req req; /* as asked: atyp, host (or the address as text), port */
    char dest[SOCKS_DEST_MAX];
    enum udpdest_state state;
    int verdict; /* the owner's (LUAHOST_*), asked when it was made */
    int server;  /* client, a tunnelled one: the route hook's server (an index) */
    struct sockaddr_storage sa;
    socklen_t salen;
    const char *why; /* FAILED: the resolver's reason */
    int64_t used_us;
    struct evbuffer *held; /* RESOLVING: datagrams, each `len u16 | data` */
    unsigned held_n;
    struct udpdest_table *t;
    struct lookup_slot *lookup;
};

struct udpdest_owner {
    /* d's name has resolved (READY) or failed (FAILED); possibly from inside udpdest_resolve. */
    void (*resolved)(void *arg, struct udpdest *d);
    /* A datagram came back to the table's sockets from src: from READY destination d, or from
     * a stranger (d NULL). */
    void (*reply)(void *arg, struct udpdest *d, const struct sockaddr *src, const uint8_t *data,
                  size_t n);
    void *arg;
};

struct event_base;
struct udpdest_table *udpdest_table_new(struct event_base *base, struct evdns_base *dns,
                                        const struct udpdest_owner *o);
/* Frees the table and closes its sockets, cancelling its lookups (the owner is not called). */
void udpdest_table_free(struct udpdest_table *t);

/* Sends a datagram to READY destination d from the table's socket for its family: 0, or -1 (no
 * socket, or the kernel refused it: its buffer full, an earlier ICMP error). */
int udpdest_send(struct udpdest_table *t, const struct udpdest *d, const uint8_t *data, size_t n);

/* The entry for a (its name or address and port), made (UDPDEST_NEW, *fresh = 1) when new;
 * NULL when out of memory, every entry is resolving, or UDPDEST_NEW_PER_SEC were made in the
 * last second. */
struct udpdest *udpdest_get(struct udpdest_table *t, const struct socks_req *a, int *fresh);

/* A NEW entry's address: READY at once for an address, else RESOLVING (resolved follows). */
void udpdest_resolve(struct udpdest *d);

/* Holds a datagram while d resolves: 0, or -1 when the hold is full (the caller drops it). */
int udpdest_hold(struct udpdest *d, const uint8_t *data, size_t n);
/* Takes the first held datagram: its length, or -1 when none is left; *data points at it until
 * the next call. */
long udpdest_unhold(struct udpdest *d, const uint8_t **data);

#endif
