/* reuse.c: see reuse.h. */
#include "reuse.h"

int
reuse_allowed(long reuse_max_sec, long reuse_max_cnt, int goaway, double age, unsigned sessions)
{
    return !goaway && age < (double)reuse_max_sec && (long)sessions < reuse_max_cnt;
}
