/* log.c: one log line per event, in the seed's exact format, to stderr and the log file. The
 * line is built whole and written with one write() per stream so that lines never interleave. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_level = LOG_INFO;
static int log_fd = -1;
static char log_path[1024];
static void (*log_sink)(int, const char *, const char *, void *);
static int log_sink_level = LOG_ERROR;
static void *log_sink_arg;

void
log_set_sink(void (*sink)(int level, const char *line, const char *msg, void *arg), int min_level,
             void *arg)
{
    log_sink = sink;
    log_sink_level = min_level;
    log_sink_arg = arg;
}

int
log_parse_level(const char *s, int *out)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {
        {"debug", LOG_DEBUG}, {"debg", LOG_DEBUG},   {"info", LOG_INFO},
        {"warn", LOG_WARN},   {"warning", LOG_WARN}, {"error", LOG_ERROR},
        {"erro", LOG_ERROR},  {"fatal", LOG_FATAL},  {"fata", LOG_FATAL},
    };
    char *end;
    long v;
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    if (*s == 0) return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != 0 || v < 0 || v > 999) return -1;
    *out = (int)v;
    return 0;
}

int
log_open(const char *path, int level, const char **err)
{
    log_level = level;
    snprintf(log_path, sizeof(log_path), "%s", path);
    if (*path == 0) return 0;
    /* 0640: the log names every destination the users visit; not for everyone on the host. */
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd == -1) {
        *err = strerror(errno);
        return -1;
    }
    return 0;
}

void
log_reopen(void)
{
    int fd;

    if (log_path[0] == 0) return;
    fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd == -1) {
        log_msg(LOG_ERROR, "[sla] cannot reopen %s: %s", log_path, strerror(errno));
        return;
    }
    if (log_fd != -1) close(log_fd);
    log_fd = fd;
}

const char *
log_level_tag(int level)
{
    if (level >= LOG_FATAL) return "fata";
    if (level >= LOG_ERROR) return "erro";
    if (level >= LOG_WARN) return "warn";
    if (level >= LOG_INFO) return "info";
    return "debg";
}

/* Copies src into dst (room for cap bytes, cap > 0) with every byte that could break the line
 * or the terminal escaped: control bytes and DEL as \xNN, a backslash as \\. Text from the
 * network (a destination name, a peer's certificate, a script's error) then cannot end a line
 * or forge one. Returns the length written. */
static size_t
escape_into(char *dst, size_t cap, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, n = 0;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c >= 0x20 && c != 0x7f && c != '\\') {
            if (n + 1 > cap) break;
            dst[n++] = (char)c;
        } else if (c == '\\') {
            if (n + 2 > cap) break;
            dst[n++] = '\\';
            dst[n++] = '\\';
        } else {
            if (n + 4 > cap) break;
            dst[n++] = '\\';
            dst[n++] = 'x';
            dst[n++] = hex[c >> 4];
            dst[n++] = hex[c & 15];
        }
    }
    return n;
}

void
log_msg(int level, const char *fmt, ...)
{
    char line[2048], msg[2048];
    struct timeval tv;
    struct tm tm;
    size_t n, head;
    int k, sink = log_sink != NULL && level >= log_sink_level;
    va_list ap;

    if (level < log_level && !sink) return;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y.%m.%d %H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, " [%s] ", log_level_tag(level));
    head = n;
    va_start(ap, fmt);
    k = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (k < 0) k = 0;
    if ((size_t)k >= sizeof(msg)) k = sizeof(msg) - 1;
    n += escape_into(line + n, sizeof(line) - n - 2, msg, (size_t)k);
    if (sink) {
        line[n] = 0;
        log_sink(level, line, line + head, log_sink_arg);
        if (level < log_level) return;
    }
    line[n++] = '\n';
    /* Best effort: a full disk or a closed stderr must not stop the tunnel. */
    if (write(STDERR_FILENO, line, n) == -1) { /* nothing to do */
    }
    if (log_fd != -1 && write(log_fd, line, n) == -1) { /* nothing to do */
    }
}
