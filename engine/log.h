/* log.h: the seed's log format, `2020.09.01 17:15:07 [info] [conn] + 8f7ed46a = 2`, written to
 * stderr and to the log file. */
#ifndef TUNNELS_LOG_H
#define TUNNELS_LOG_H

enum log_level {
    LOG_DEBUG = 100,
    LOG_INFO = 200,
    LOG_WARN = 300,
    LOG_ERROR = 400,
    LOG_FATAL = 500,
};

/* The four letters a line shows for level: "debg", "info", "warn", "erro" or "fata". */
const char *log_level_tag(int level);

/* Parses "debug", "info", "warn", "error", "fatal" (or debg/erro/fata) or an integer 0-999. */
int log_parse_level(const char *s, int *out);

/* Sets the threshold and opens path for appending ("" for stderr only). Returns 0, or -1 with
 * *err set from errno's text. */
int log_open(const char *path, int level, const char **err);

/* Reopens the log file (after logrotate moved it). Keeps the old one on failure. */
void log_reopen(void);

/* Events at min_level or above also go to sink (the alerts), whatever -sla.log.level says:
 * level, the whole line (no newline), and the part after the level tag ("[sock] ..."). The sink
 * must only queue: it runs inside log_msg, which may be inside anything. NULL removes it. */
void log_set_sink(void (*sink)(int level, const char *line, const char *msg, void *arg),
                  int min_level, void *arg);

/* Writes one line at level: the time, the level tag, then the formatted text. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
