/* direct.h: a session the client's route hook sent "direct": the app's socket joined to a
 * connection the client makes itself, without the tunnel. */
#ifndef TUNNELS_DIRECT_H
#define TUNNELS_DIRECT_H

struct bufferevent;
struct evdns_base;
struct socks_req;

/* Connects to req (resolving a name through dns) and relays between it and app, which the
 * direct session now owns (it has had its SOCKS reply). connect_sec bounds resolving and
 * connecting. Failures are logged and close app with RST. */
void direct_open(struct evdns_base *dns, struct bufferevent *app, const struct socks_req *req,
                 long connect_sec);

/* As direct_open, for a forwarded HTTP request (its head, in origin form, in app's input): the
 * app may send body_left more bytes, what follows is dropped (one request per session), and a
 * session that ends before any byte came back answers the app 502 with the reason. */
void direct_open_http(struct evdns_base *dns, struct bufferevent *app, const struct socks_req *req,
                      long connect_sec, long long body_left);

/* Direct sessions open now. */
unsigned direct_count(void);

/* Closes every direct session (shutdown). */
void direct_close_all(void);

#endif
