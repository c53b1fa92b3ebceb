/* addr.c: address parsing for the flags and the small socket set-up every connection shares. */
#include "addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "log.h"

static int
split(const char *hostport, char *host, size_t hlen, const char **port)
{
    const char *colon;
    size_t n;

    if (hostport[0] == '[') {
        colon = strstr(hostport, "]:");
        if (colon == NULL) return -1;
        n = (size_t)(colon - hostport - 1);
        if (n >= hlen) return -1;
        memcpy(host, hostport + 1, n);
        host[n] = 0;
        *port = colon + 2;
        return 0;
    }
    colon = strrchr(hostport, ':');
    if (colon == NULL) return -1;
    n = (size_t)(colon - hostport);
    if (n >= hlen) return -1;
    memcpy(host, hostport, n);
    host[n] = 0;
    *port = colon + 1;
    return 0;
}

void
addr_host(const char *hostport, char *out, size_t len)
{
    const char *port;

    if (split(hostport, out, len, &port) == -1) snprintf(out, len, "%s", hostport);
}

int
addr_resolve(const char *hostport, int family, enum addr_use use, struct sockaddr_storage *ss,
             socklen_t *sslen, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char host[256];
    const char *port;
    int rc;

    if (split(hostport, host, sizeof(host), &port) == -1 || *port == 0) {
        snprintf(err, errlen, "\"%s\" is not host:port", hostport);
        return -1;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = use == ADDR_TO_LISTEN_ON ? AI_PASSIVE : 0;
    rc = getaddrinfo(host[0] != 0 ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "\"%s\": %s", hostport, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

socklen_t
addr_sockaddr(int family, const void *ip, unsigned port, struct sockaddr_storage *ss)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, ip, 4);
        sin->sin_port = htons(port);
        return sizeof(*sin);
    }
    sin6->sin6_family = AF_INET6;
    memcpy(&sin6->sin6_addr, ip, 16);
    sin6->sin6_port = htons(port);
    return sizeof(*sin6);
}

void
addr_format(const struct sockaddr *sa, char *out, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, len, "[%s]:%u", ip, (unsigned)ntohs(s6->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, len, "%s:%u", ip, (unsigned)ntohs(s4->sin_port));
    } else {
        snprintf(out, len, "?");
    }
}

int
addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr)) return 1;
        return IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && s6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

int
addr_tune_socket(int fd)
{
    int one = 1;

    /* Small frames (a request, a WINDOW) must leave at once: Nagle would cost a round trip. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1) return -1;
    return 0;
}

int
addr_keepalive(int fd)
{
    int one = 1, idle = 60, intvl = 15, cnt = 4;

    /* A destination that vanished without a FIN or RST (a host gone, a NAT that forgot us)
     * would hold its session's descriptor and buffers until -session.idle.sec; the kernel finds
     * it in 2 minutes: 60 s quiet, then 4 probes 15 s apart. */
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) == -1) return -1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) == -1) return -1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) == -1) return -1;
    return setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

int
addr_limit_unsent(int fd)
{
    int bytes = ADDR_UNSENT_MAX;

    return setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &bytes, sizeof(bytes));
}

int
addr_tcp_established(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1) return 0;
    return ti.tcpi_state == TCP_ESTABLISHED;
}

struct evdns_base *
addr_dns_new(struct event_base *base)
{
    struct evdns_base *dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);

    if (dns == NULL) {
        /* No resolv.conf: names resolve from /etc/hosts only. */
        dns = evdns_base_new(base, 0);
        if (dns != NULL) evdns_base_load_hosts(dns, NULL);
    }
    return dns;
}

void
addr_listener_pause(struct evconnlistener *lis, struct event *resume)
{
    struct timeval tv = {0, 200000};

    log_msg(LOG_WARN, "[listen] accept: %s; pausing 200 ms",
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    evconnlistener_disable(lis);
    evtimer_add(resume, &tv);
}
