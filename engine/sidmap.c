/* sidmap.c: linear probing with backward-shift deletion, so there are no tombstones and a
 * lookup stops at the first empty slot. Session 0 is never stored: key 0 marks an empty slot. */
#include "sidmap.h"

#include <stdlib.h>

struct sidmap {
    uint16_t *keys;
    void **vals;
    size_t cap; /* a power of two */
    size_t count;
};

static size_t
slot(uint16_t sid, size_t cap)
{
    return ((size_t)sid * 40503u) & (cap - 1); /* Knuth's multiplicative hash, 16-bit */
}

struct sidmap *
sidmap_new(void)
{
    struct sidmap *m = calloc(1, sizeof(*m));

    if (m == NULL) return NULL;
    m->cap = 8;
    m->keys = calloc(m->cap, sizeof(*m->keys));
    m->vals = calloc(m->cap, sizeof(*m->vals));
    if (m->keys == NULL || m->vals == NULL) {
        sidmap_free(m);
        return NULL;
    }
    return m;
}

void
sidmap_free(struct sidmap *m)
{
    if (m == NULL) return;
    free(m->keys);
    free(m->vals);
    free(m);
}

void *
sidmap_get(const struct sidmap *m, uint16_t sid)
{
    size_t i;

    for (i = slot(sid, m->cap); m->keys[i] != 0; i = (i + 1) & (m->cap - 1))
        if (m->keys[i] == sid) return m->vals[i];
    return NULL;
}

static void
insert(uint16_t *keys, void **vals, size_t cap, uint16_t sid, void *val)
{
    size_t i = slot(sid, cap);

    while (keys[i] != 0)
        i = (i + 1) & (cap - 1);
    keys[i] = sid;
    vals[i] = val;
}

int
sidmap_put(struct sidmap *m, uint16_t sid, void *val)
{
    uint16_t *keys;
    void **vals;
    size_t i, cap;

    if ((m->count + 1) * 2 > m->cap) {
        cap = m->cap * 2;
        keys = calloc(cap, sizeof(*keys));
        vals = calloc(cap, sizeof(*vals));
        if (keys == NULL || vals == NULL) {
            free(keys);
            free(vals);
            return -1;
        }
        for (i = 0; i < m->cap; i++)
            if (m->keys[i] != 0) insert(keys, vals, cap, m->keys[i], m->vals[i]);
        free(m->keys);
        free(m->vals);
        m->keys = keys;
        m->vals = vals;
        m->cap = cap;
    }
    insert(m->keys, m->vals, m->cap, sid, val);
    m->count++;
    return 0;
}

void
sidmap_del(struct sidmap *m, uint16_t sid)
{
    size_t mask = m->cap - 1, i, j, home;

    for (i = slot(sid, m->cap); m->keys[i] != sid; i = (i + 1) & mask)
        if (m->keys[i] == 0) return;
    /* Shift later members of the probe run back into the hole when their home allows it. */
    j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->keys[j] == 0) break;
        home = slot(m->keys[j], m->cap);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->keys[i] = 0;
    m->vals[i] = NULL;
    m->count--;
}

size_t
sidmap_count(const struct sidmap *m)
{
    return m->count;
}

size_t
sidmap_values(const struct sidmap *m, void **out, size_t max)
{
    size_t i, n = 0;

    for (i = 0; i < m->cap && n < max; i++)
        if (m->keys[i] != 0) out[n++] = m->vals[i];
    return n;
}
