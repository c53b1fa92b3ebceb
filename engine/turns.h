/* turns.h: room on a full connection goes to its sessions in turn. A session that finds the
 * connection full, or others already waiting, gets in line; as room comes, the connection hands
 * out turns in line order, about as many as the room holds (TURN_BYTES each); a session given a
 * turn reads at most that much, then passes the turn on. One given a turn it could not use
 * (nothing it may send) gets back in line at the front: it keeps its place.
 *
 * Why a line and not a flag: waking every waiting session at once let the first few refill the
 * output and sent the rest to the back each time, and sessions reading on their own (epoll)
 * took room ahead of the line (seen: 2-7 of 400 sessions on two connections got no byte for
 * 60 s). Pure: session ids in, session ids out; the mux wakes the sessions (mux.c). */
#ifndef TUNNELS_TURNS_H
#define TUNNELS_TURNS_H

#include <stddef.h>
#include <stdint.h>

#define TURN_BYTES (64 * 1024) /* what one turn may read */
#define TURNS_MAX 4096         /* places in line: one per session a connection may hold */

/* A connection's line. Zeroed is empty; the ring is allocated at the first wait. */
struct turns {
    uint16_t *ring; /* session ids, oldest first */
    uint16_t head, n;
    unsigned wake_all : 1; /* the ring was full or could not be allocated: wake everyone */
};

/* A session's place: whether it waits in line, or holds a turn it has not used yet. */
struct turn_ticket {
    unsigned waiting : 1, holding : 1;
};

void turns_free(struct turns *t); /* the ring; t is empty again */

/* Session sid (ticket k) found no room, or others waiting: it gets in line, at the front if it
 * held a turn it could not use. A no-op while it waits already. */
void turns_wait(struct turns *t, struct turn_ticket *k, uint16_t sid);

/* 1 while sessions wait: one that holds no turn must get in line, not read. */
int turns_waiting(const struct turns *t);

/* The next session in line, 0 when the line is empty. The ids of sessions that ended while
 * waiting stay in line until their turn: the caller skips ids it no longer knows. */
uint16_t turns_next(struct turns *t);

/* 1 (once) when everyone must be woken, in any order: the line overflowed. */
int turns_take_wake_all(struct turns *t);

/* How many turns to hand out when room bytes are free below the connection's bound. */
size_t turns_for_room(size_t room);

/* k is given a turn (by the mux, from turns_next). */
void turns_grant(struct turn_ticket *k);
/* 1 while k holds a turn it has not used. */
int turns_held(const struct turn_ticket *k);
/* 1 when k held a turn, which it now uses (it reads at most TURN_BYTES); the turn is spent. */
int turns_use(struct turn_ticket *k);

#endif
