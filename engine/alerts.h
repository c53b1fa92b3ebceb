/* alerts.h: alerts. Log events at the levels the script subscribes to (alert_levels) are queued
 * from inside log_msg, then, outside it, formatted by the script's alert hook and sent to
 * DingTalk under a rate limit: -sla.alert.burst at once, then one per -sla.alert.every.sec,
 * which summarises what was held meanwhile. Nothing here runs on the data path. */
#ifndef TUNNELS_ALERTS_H
#define TUNNELS_ALERTS_H

#include <stddef.h>

#include "config.h"

struct event_base;
struct luahost;
struct alerts;

/* Starts alerting when cfg->dingtalk_token is set. NULL with err when it cannot. */
struct alerts *alerts_new(struct event_base *base, const struct config *cfg, struct luahost *lua,
                          char *err, size_t errlen);
void alerts_free(struct alerts *s);

/* The script was reloaded: its alert_levels may have changed. */
void alerts_reload(struct alerts *s);

#endif
