/* addr.h: "host:port" text to socket addresses, the socket options every connection gets, and
 * what a listener does when accept fails. */
#ifndef TUNNELS_ADDR_H
#define TUNNELS_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

enum addr_use {
    ADDR_TO_DIAL,      /* an empty host is this host */
    ADDR_TO_LISTEN_ON, /* an empty host means every address */
};

/* Resolves "host:port", "[v6]:port" or ":port" in family (AF_UNSPEC, AF_INET, AF_INET6).
 * Blocking: for start-up only. Returns 0 or -1 with err. */
int addr_resolve(const char *hostport, int family, enum addr_use use, struct sockaddr_storage *ss,
                 socklen_t *sslen, char *err, size_t errlen);

/* The host part of "host:port" (without brackets) into out. */
void addr_host(const char *hostport, char *out, size_t len);

/* The socket address of a binary IPv4 (family AF_INET) or IPv6 address and a port; returns its
 * length. */
socklen_t addr_sockaddr(int family, const void *ip, unsigned port, struct sockaddr_storage *ss);

/* Formats a socket address as "1.2.3.4:5" or "[::1]:5". */
void addr_format(const struct sockaddr *sa, char *out, size_t len);

/* 1 when sa is a loopback address (127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104). */
int addr_is_loopback(const struct sockaddr *sa);

/* TCP_NODELAY; returns 0 or -1. Sockets are non-blocking from their creation (SOCK_NONBLOCK;
 * evconnlistener accepts with it): two fcntl calls per session saved. */
int addr_tune_socket(int fd);

/* TCP keepalive on a destination's socket (found dead within about 2 minutes). */
int addr_keepalive(int fd);

/* Bounds what waits unsent in the kernel's send buffer of fd to ADDR_UNSENT_MAX bytes
 * (TCP_NOTSENT_LOWAT): past it the socket takes no more, and the rest waits in the session's
 * output, which its window and budgets count. Without it a destination that never reads parked
 * about 3 MiB per socket in the kernel (net.ipv4.tcp_wmem), outside every budget: one client's
 * 256 such sessions, 775 MB in 14 s. What is in flight (the congestion window) is not
 * affected. */
#define ADDR_UNSENT_MAX (256 * 1024)
int addr_limit_unsent(int fd);

/* 1 when the TCP socket fd is established (TCP_INFO), 0 when not or unknown. */
int addr_tcp_established(int fd);

struct event;
struct event_base;
struct evdns_base;
struct evconnlistener;

/* A listener's accept failed (out of descriptors, as a rule): logs it, stops accepting and arms
 * resume (a timer whose callback re-enables lis) for 200 ms, rather than spin on a listener
 * that stays readable. The client's SOCKS5 listener and the server's share it. */
void addr_listener_pause(struct evconnlistener *lis, struct event *resume);

/* An async resolver from /etc/resolv.conf, or from /etc/hosts alone when there is none. NULL
 * when neither can be set up. */
struct evdns_base *addr_dns_new(struct event_base *base);

#endif
