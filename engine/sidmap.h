/* sidmap.h: session id -> pointer, an open-addressing hash sized to the live sessions (a table
 * indexed by all 65535 ids would cost 512 KiB per connection). */
#ifndef TUNNELS_SIDMAP_H
#define TUNNELS_SIDMAP_H

#include <stddef.h>
#include <stdint.h>

struct sidmap;

struct sidmap *sidmap_new(void);
void sidmap_free(struct sidmap *m);
void *sidmap_get(const struct sidmap *m, uint16_t sid);
/* Returns 0, or -1 when out of memory. sid must be non-zero and absent. */
int sidmap_put(struct sidmap *m, uint16_t sid, void *val);
void sidmap_del(struct sidmap *m, uint16_t sid);
size_t sidmap_count(const struct sidmap *m);
/* Copies up to max values into out; returns how many. Lets callers close sessions (which
 * deletes them) without iterating a table that changes under them. */
size_t sidmap_values(const struct sidmap *m, void **out, size_t max);

#endif
