/* array.h: arrays that grow by doubling (the pool's and the server's tables of connections). */
#ifndef TUNNELS_ARRAY_H
#define TUNNELS_ARRAY_H

#include <stdlib.h>

/* Makes room for element n in *arrp, an array of *cap elements of size bytes (doubled, or
 * first when empty). Returns 0, or -1 when out of memory (the array and *cap unchanged). arrp
 * is the address of the array's pointer. */
static inline int
array_grow(void *arrp, size_t *cap, size_t n, size_t size, size_t first)
{
    void **arr = arrp;
    size_t c;
    void *p;

    if (n < *cap) return 0;
    c = *cap ? *cap * 2 : first;
    p = realloc(*arr, c * size);
    if (p == NULL) return -1;
    *arr = p;
    *cap = c;
    return 0;
}

#endif
