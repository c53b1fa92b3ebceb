/* clock.h: the engine's one clock for durations and deadlines: the monotonic clock, which wall
 * clock changes (NTP, an operator) do not move. Log lines and alerts show wall time (log.c). */
#ifndef TUNNELS_CLOCK_H
#define TUNNELS_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Microseconds on the monotonic clock. */
static inline int64_t
clock_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif
