/* account.h: what one party holds, charged against its limits: sessions open and the bytes of
 * their receive windows (what the peer may still send plus what waits for the local socket).
 * Accounts form a chain, each charge counted in every link: a connection's account, then its
 * client certificate's (on the server), then the process's. A session charges the account of
 * the connection it rides on; an orphan (its connection gone) moves its charge to the parent, so
 * what it holds stays counted against its client until it ends. No I/O, no clock. */
#ifndef TUNNELS_ACCOUNT_H
#define TUNNELS_ACCOUNT_H

#include <stdint.h>

struct account {
    struct account *parent;      /* NULL: the process's */
    const char *name;            /* the flag that sets its limit, for logs */
    int64_t bytes;               /* window bytes charged now, children included */
    int64_t bytes_max;           /* 0: no limit */
    unsigned sessions;           /* sessions charged now, children included */
    unsigned refs;               /* sessions and children charging it directly */
    uint64_t to_peer, from_peer; /* payload its sessions moved, children included (metrics) */
    /* Called when the last reference goes (an account the process allocated per party). */
    void (*release)(struct account *a, void *arg);
    void *release_arg;
};

/* The process's account (its limit: account_process_limit). */
struct account *account_process(void);
void account_process_limit(int64_t bytes_max);

/* A new account under parent (NULL: the process's), holding a reference to it. */
void account_init(struct account *a, struct account *parent, int64_t bytes_max, const char *name);
/* Drops a's reference to its parent; a must charge nothing any more. */
void account_fini(struct account *a);
/* Hangs a under another parent, its charges moving along. */
void account_reparent(struct account *a, struct account *parent);
void account_ref(struct account *a);
void account_unref(struct account *a);

/* A session starts or stops charging a (its bytes charged go with it). */
void account_open(struct account *a);
void account_close(struct account *a, int64_t bytes);
/* A session's charge changes by delta bytes, in a and every account above it. */
void account_charge(struct account *a, int64_t delta);
/* A session of a moved n payload bytes: to the peer (read from its local socket) or from it. */
void account_moved_to_peer(struct account *a, uint64_t n);
void account_moved_from_peer(struct account *a, uint64_t n);

/* The bytes a may still be charged before it or an account above it reaches its limit (negative
 * when one is past it); INT64_MAX when none has a limit. */
int64_t account_room(const struct account *a);
/* The account of the chain whose limit leaves the least room: the one to name in a log. */
const struct account *account_tightest(const struct account *a);

#endif
