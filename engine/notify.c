/* notify.c: see notify.h. */
#include "notify.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static void
send_state(const char *text)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n;
    socklen_t len;
    int fd;

    if (path == NULL || (path[0] != '/' && path[0] != '@')) return;
    n = strlen(path);
    if (n >= sizeof(sa.sun_path)) return;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') sa.sun_path[0] = 0; /* an abstract socket */
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd == -1) return;
    if (sendto(fd, text, strlen(text), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) == -1)
        log_msg(LOG_WARN, "[main] cannot tell the service manager \"%.20s\"", text);
    close(fd);
}

void
notify_ready(const char *status)
{
    char text[300];

    snprintf(text, sizeof(text), "READY=1\nSTATUS=%s", status);
    send_state(text);
}

void
notify_reloading(void)
{
    send_state("RELOADING=1");
}

void
notify_stopping(void)
{
    send_state("STOPPING=1");
}
