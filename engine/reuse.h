/* reuse.h: the hard limits on reusing a pool connection, in C for when the Lua policy cannot
 * answer (no hook, or one that failed). lua/policy.lua's policy.reusable says the same in Lua;
 * spec/policy_spec.lua checks that the two agree. Pure: no I/O, no state. */
#ifndef TUNNELS_REUSE_H
#define TUNNELS_REUSE_H

/* 1 when a connection may take one more session: not told to go away, younger than
 * reuse_max_sec and has carried fewer than reuse_max_cnt sessions (-remux.reuse.max.*). */
int reuse_allowed(long reuse_max_sec, long reuse_max_cnt, int goaway, double age,
                  unsigned sessions);

#endif
