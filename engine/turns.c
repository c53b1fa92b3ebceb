/* turns.c: see turns.h. */
#include "turns.h"

#include <stdlib.h>

void
turns_free(struct turns *t)
{
    free(t->ring);
    t->ring = NULL;
    t->head = t->n = 0;
    t->wake_all = 0;
}

void
turns_wait(struct turns *t, struct turn_ticket *k, uint16_t sid)
{
    int front = k->holding;

    if (k->waiting) return;
    k->waiting = 1;
    k->holding = 0;
    if (t->ring == NULL) t->ring = malloc(TURNS_MAX * sizeof(*t->ring));
    if (t->ring == NULL || t->n == TURNS_MAX) {
        /* Out of memory, or the ring is full (ids of sessions that ended while waiting stay
         * until their turn): everyone is woken next time. */
        t->wake_all = 1;
        return;
    }
    if (front) {
        t->head = (uint16_t)((t->head + TURNS_MAX - 1) % TURNS_MAX);
        t->ring[t->head] = sid;
    } else {
        t->ring[(t->head + t->n) % TURNS_MAX] = sid;
    }
    t->n++;
}

int
turns_waiting(const struct turns *t)
{
    return t->n > 0 || t->wake_all;
}

uint16_t
turns_next(struct turns *t)
{
    uint16_t sid;

    if (t->n == 0) return 0;
    sid = t->ring[t->head];
    t->head = (uint16_t)((t->head + 1) % TURNS_MAX);
    t->n--;
    return sid;
}

int
turns_take_wake_all(struct turns *t)
{
    int all = t->wake_all;

    t->wake_all = 0;
    return all;
}

size_t
turns_for_room(size_t room)
{
    return room / TURN_BYTES + 1;
}

void
turns_grant(struct turn_ticket *k)
{
    k->waiting = 0;
    k->holding = 1;
}

int
turns_held(const struct turn_ticket *k)
{
    return k->holding;
}

int
turns_use(struct turn_ticket *k)
{
    int held = k->holding;

    k->holding = 0;
    return held;
}
