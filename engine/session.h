/* session.h: one tunnelled stream. It joins a local socket (the app's on the client, the
 * destination's on the server) to a session id on a mux, relays both ways under flow control,
 * half-closes with length-0 frames, and closes exactly once. */
#ifndef TUNNELS_SESSION_H
#define TUNNELS_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct bufferevent;
struct evbuffer;
struct mux;
struct session;

enum session_local {
    SESSION_LOCAL_UP,         /* client: the app's socket, connected */
    SESSION_LOCAL_CONNECTING, /* server: the destination's, connected later (session_connect_fd) */
};

/* A new session on m under sid, owning local (a bufferevent). dest is the destination as text,
 * for the logs. Returns NULL on out of memory, in which case local is freed. */
struct session *session_new(struct mux *m, uint16_t sid, struct bufferevent *local,
                            enum session_local state, const char *dest);

/* Client: the EagerSocks header that leads the first frame. It leaves with the app's first
 * bytes, or alone once -eagersocks.hold.ms passes without any. */
void session_set_header(struct session *s, const uint8_t *hdr, size_t len);

/* Client: when the app asked for the session (before it waited for a dial, if it did); its
 * first byte back is timed from then (tunnels_ttfb_seconds). */
void session_set_asked(struct session *s, int64_t asked_us);

/* Client, a forwarded HTTP request (its head already in the local input): the app may send
 * body_left more bytes on it, and what comes after is dropped (one request per session); if the
 * session ends before any byte came back, the app gets a 502 with the reason. */
void session_forward_http(struct session *s, int64_t body_left);

/* Server: connects the (not yet connected) local bufferevent, through fd (a new non-blocking
 * socket the session now owns), to sa. On failure the session is reset with the reason and
 * closed. */
void session_connect_fd(struct session *s, int fd, const struct sockaddr *sa, socklen_t len);

/* Server: the destination cannot be reached; RESET the peer with reason and close. */
void session_fail(struct session *s, uint8_t reason, const char *why);

/* Server: called when the session closes before cancel's work (a DNS lookup) is done. */
void session_on_close(struct session *s, void (*cancel)(void *arg), void *arg);

/* The session's data frames (the mux calls the rest of its frames through struct mux_chan):
 * the server hands it the first frame's bytes after the header. 0, or -1 with *err. */
int session_on_data(struct session *s, struct evbuffer *src, size_t n, const char **err);

unsigned session_count(void);

/* Sessions are freed on a later loop pass than the one that closed them (as muxes are), so a
 * function that may close s leaves it readable. At exit, once the loop has stopped: frees the
 * closed sessions no pass will free now. */
void session_free_closed(void);

#endif
