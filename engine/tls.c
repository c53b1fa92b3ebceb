/* tls.c: the TLS policy in one place. Both contexts pin TLS >= 1.2 with AEAD suites only;
 * TLS 1.3 suites are all AEAD already. Sessions resume on the client (a ticket per server). */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "writethrough.h"

#define TLS_RECORD_MAX 16384  /* plaintext bytes in one TLS record */
#define TLS_SERVER_CACHE 1024 /* resumable sessions the server keeps */
#define TLS12_AEAD "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"

static int
readable(const char *flag, const char *path, char *err, size_t errlen)
{
    if (access(path, R_OK) == -1) {
        snprintf(err, errlen, "tunnels: -%s: %s: %s", flag, path, strerror(errno));
        return -1;
    }
    return 0;
}

static void
ssl_err(char *err, size_t errlen, const char *flag, const char *path)
{
    char buf[256];

    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    ERR_clear_error();
    snprintf(err, errlen, "tunnels: -%s: %s: %s", flag, path, buf);
}

static SSL_CTX *
base_ctx(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);

    if (ctx == NULL) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, TLS12_AEAD);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* libevent's TLS bufferevent may hand SSL_write a different buffer on a retry. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* No read-ahead: libevent's TLS bufferevent only reads on socket readability, so records
     * OpenSSL buffered ahead would wait (seen: a WINDOW frame held 14 s until the next PING). */
    return ctx;
}

static int
load_identity(SSL_CTX *ctx, const char *certflag, const char *cert, const char *keyflag,
              const char *key, char *err, size_t errlen)
{
    if (readable(certflag, cert, err, errlen) == -1 || readable(keyflag, key, err, errlen) == -1)
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_err(err, errlen, certflag, cert);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, errlen, keyflag, key);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "tunnels: -%s: %s does not match the certificate %s", keyflag, key,
                 cert);
        return -1;
    }
    return 0;
}

/* ALPN: a client that offers remux/2 speaks UDP sessions; one that offers nothing (every
 * client before v2) is spoken to in v1, and so is any other offer. Never a handshake failure:
 * the version is the sessions' business, not the connection's. */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
            unsigned inlen, void *arg)
{
    static const unsigned char v2[] = "\x07" TLS_ALPN_V2;
    unsigned char *sel;

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, v2, sizeof(v2) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *
tls_server_ctx(const struct config *cfg, char *err, size_t errlen)
{
    static const unsigned char sid_ctx[] = "tunnels";
    SSL_CTX *ctx = base_ctx(TLS_server_method());

    if (ctx == NULL) {
        snprintf(err, errlen, "tunnels: cannot create a TLS context");
        return NULL;
    }
    if (cfg->tls_server_cert[0] == 0 || cfg->tls_server_key[0] == 0) {
        snprintf(err, errlen,
                 "tunnels: -tls.server.cert and -tls.server.key: missing (the "
                 "server's identity; or -remux.net=tcp for a plain-TCP test server)");
        goto err;
    }
    if (load_identity(ctx, "tls.server.cert", cfg->tls_server_cert, "tls.server.key",
                      cfg->tls_server_key, err, errlen) == -1)
        goto err;
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    /* Stateful resumption: a ticket names a session in this process's cache. A stateless
     * ticket carries the whole session, client certificate included, and decoding it
     * (d2i_SSL_SESSION) was a tenth of the server's time under a stream of new sessions (the
     * pool resumes a connection every 16 sessions). Each ticket is for one use; two per
     * handshake (OpenSSL's default) keep the client's supply ahead of its dials, which may
     * come before the last connection's tickets are read. The cache is bounded (a session
     * shares the peer's certificate: well under 1 KiB). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_sess_set_cache_size(ctx, TLS_SERVER_CACHE);
    if (cfg->tls_server_ca[0] != 0) {
        if (readable("tls.server.ca", cfg->tls_server_ca, err, errlen) == -1) goto err;
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_server_ca, NULL) != 1) {
            ssl_err(err, errlen, "tls.server.ca", cfg->tls_server_ca);
            goto err;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    if (cfg->tls_server_crl[0] != 0) {
        /* A revoked client certificate fails its handshake. The CRL is the CA's (openssl ca
         * -gencrl, easy-rsa gen-crl): checked for the client's own certificate. */
        X509_STORE *st = SSL_CTX_get_cert_store(ctx);
        X509_LOOKUP *lu = X509_STORE_add_lookup(st, X509_LOOKUP_file());
        if (readable("tls.server.crl", cfg->tls_server_crl, err, errlen) == -1) goto err;
        if (lu == NULL || X509_load_crl_file(lu, cfg->tls_server_crl, X509_FILETYPE_PEM) < 1) {
            ssl_err(err, errlen, "tls.server.crl", cfg->tls_server_crl);
            goto err;
        }
        X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
    }
    return ctx;
err:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *
tls_client_ctx(const struct config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = base_ctx(TLS_client_method());

    if (ctx == NULL) {
        snprintf(err, errlen, "tunnels: cannot create a TLS context");
        return NULL;
    }
    if (cfg->tls_client_ca[0] != 0) {
        if (readable("tls.client.ca", cfg->tls_client_ca, err, errlen) == -1) goto err;
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1) {
            ssl_err(err, errlen, "tls.client.ca", cfg->tls_client_ca);
            goto err;
        }
    } else {
        SSL_CTX_set_default_verify_paths(ctx);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    {
        static const unsigned char v2[] = "\x07" TLS_ALPN_V2;
        if (SSL_CTX_set_alpn_protos(ctx, v2, sizeof(v2) - 1) != 0) {
            snprintf(err, errlen, "tunnels: cannot set the TLS ALPN list");
            goto err;
        }
    }
    if (cfg->tls_client_cert[0] != 0 || cfg->tls_client_key[0] != 0) {
        if (load_identity(ctx, "tls.client.cert", cfg->tls_client_cert, "tls.client.key",
                          cfg->tls_client_key, err, errlen) == -1)
            goto err;
    }
    return ctx;
err:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL *
tls_client_ssl(SSL_CTX *ctx, const char *name)
{
    unsigned char ip[16];
    SSL *ssl = SSL_new(ctx);

    int ok;

    if (ssl == NULL) return NULL;
    /* No name, or one OpenSSL cannot take, would leave the certificate's name unchecked: any
     * certificate of the CA would do. Refused instead. */
    if (name[0] == 0) {
        SSL_free(ssl);
        return NULL;
    }
    if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1)
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
    else
        ok = SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1;
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

int
tls_peer_fingerprint(SSL *ssl, unsigned char out[32])
{
    X509 *cert = SSL_get1_peer_certificate(ssl);
    unsigned int n = 0;
    int rc;

    if (cert == NULL) return -1;
    rc = X509_digest(cert, EVP_sha256(), out, &n) == 1 && n == 32 ? 0 : -1;
    X509_free(cert);
    return rc;
}

/* Whether OpenSSL error e is about a certificate: ours or the peer's, refused by either end. */
static int
about_certificate(unsigned long e)
{
    if (ERR_GET_LIB(e) == ERR_LIB_X509 || ERR_GET_LIB(e) == ERR_LIB_X509V3) return 1;
    if (ERR_GET_LIB(e) != ERR_LIB_SSL) return 0;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_NO_CERTIFICATES_RETURNED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED: return 1;
    default: return 0;
    }
}

enum tls_error_kind
tls_errors(struct bufferevent *bev, char *out, size_t len)
{
    enum tls_error_kind kind = TLS_ERROR_NONE;
    unsigned long e;
    size_t n = 0;
    char buf[256];

    out[0] = 0;
    while ((e = bufferevent_get_openssl_error(bev)) != 0 || (e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        /* Keep the reason, the part after the last ':' is the readable one. */
        const char *r = strrchr(buf, ':');
        r = r != NULL ? r + 1 : buf;
        /* Entries with no text of their own ("reason(1)": libevent's pushed errno) add noise. */
        if (strncmp(r, "reason(", 7) == 0) continue;
        if (about_certificate(e))
            kind = TLS_ERROR_CERTIFICATE;
        else if (kind == TLS_ERROR_NONE)
            kind = TLS_ERROR_PROTOCOL;
        if (n + strlen(r) + 3 < len)
            n += (size_t)snprintf(out + n, len - n, "%s%s", n ? "; " : "", r);
    }
    ERR_clear_error();
    return kind;
}

struct bufferevent *
tls_bufferevent_new(struct event_base *base, int fd, SSL *ssl, enum tls_side side,
                    const struct sockaddr *sa, int salen, int opts)
{
    struct bufferevent *sock, *bev;

    sock = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (sock == NULL) {
        close(fd);
        SSL_free(ssl);
        return NULL;
    }
    bufferevent_set_max_single_read(sock, TLS_IO_BATCH);
    bufferevent_set_max_single_write(sock, TLS_IO_BATCH);
    /* The filter stops encrypting once TLS_IO_BATCH bytes wait for the socket and goes on when
     * half of them have left: ciphertext stays bounded, and the socket never runs dry. */
    bufferevent_setwatermark(sock, EV_WRITE, TLS_IO_BATCH / 2, TLS_IO_BATCH);
    if (sa != NULL) {
        /* TCP Fast Open: connect() returns at once and the SYN leaves with the first write,
         * the ClientHello, which tls_fastopen_send makes. Best effort: a kernel without it
         * connects as before. */
        int on = 1;

        (void)setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &on, sizeof(on));
        if (bufferevent_socket_connect(sock, sa, salen) == -1) {
            bufferevent_free(sock);
            SSL_free(ssl);
            return NULL;
        }
    }
    bev = bufferevent_openssl_filter_new(base, sock, ssl,
                                         side == TLS_DIALLED ? BUFFEREVENT_SSL_CONNECTING
                                                             : BUFFEREVENT_SSL_ACCEPTING,
                                         opts | BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        /* Out of memory. Whether libevent freed ssl depends on where it failed: a leak here
         * is better than a double free. */
        bufferevent_free(sock);
        return NULL;
    }
    /* The filter decrypts into spans of max_single_read, capped by the read high-watermark
     * (without one, 4 KiB). One record's worth: SSL_read yields a record at a time, and a
     * larger span leaves most of each buffer chain empty; payloads move to their sessions as
     * whole chains, so a stalled reader would hold far more memory than its window (seen:
     * 5x with 100 stalled readers). Safe with the filter: re-enabling reading decrypts what
     * the socket bufferevent holds at once, it does not wait for the socket. */
    bufferevent_set_max_single_read(bev, TLS_RECORD_MAX);
    bufferevent_setwatermark(bev, EV_READ, 0, 4 * TLS_IO_BATCH);
    /* The owner reads the socket (bulkread.h: libevent's socket reads stop at 4 KiB) and calls
     * bufferevent_trigger(sock, EV_READ) to have the filter decrypt. */
    bufferevent_disable(sock, EV_READ);
    return bev;
}

/* Lingering sockets: each flushes what a freed TLS bufferevent left queued, then closes. */
struct tls_linger {
    struct bufferevent *bev;
    struct tls_linger *next, **prev;
};

static struct tls_linger *lingering;

static void
linger_free(struct tls_linger *l)
{
    *l->prev = l->next;
    if (l->next != NULL) l->next->prev = l->prev;
    bufferevent_free(l->bev);
    free(l);
}

static void
linger_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    linger_free(arg);
}

static void
linger_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    linger_free(arg);
}

/* Takes over sock's descriptor (sock no longer closes it) and what sock has queued. */
static void
linger_start(struct bufferevent *sock)
{
    struct timeval tv = {TLS_LINGER_SEC, 0};
    struct evbuffer *queued = bufferevent_get_output(sock);
    struct tls_linger *l;
    int fd = bufferevent_getfd(sock);

    /* Most of the time the socket takes it all now. */
    while (evbuffer_get_length(queued) > 0 && evbuffer_write(queued, fd) > 0)
        ;
    if (evbuffer_get_length(queued) == 0) return;
    l = calloc(1, sizeof(*l));
    if (l == NULL) return;
    l->bev = bufferevent_socket_new(bufferevent_get_base(sock), fd, BEV_OPT_CLOSE_ON_FREE);
    if (l->bev == NULL) {
        free(l);
        return;
    }
    bufferevent_setfd(sock, -1);
    evbuffer_add_buffer(bufferevent_get_output(l->bev), queued);
    l->next = lingering;
    if (l->next != NULL) l->next->prev = &l->next;
    l->prev = &lingering;
    lingering = l;
    bufferevent_setcb(l->bev, NULL, linger_write_cb, linger_event_cb, l);
    bufferevent_set_timeouts(l->bev, NULL, &tv);
    bufferevent_enable(l->bev, EV_WRITE);
}

void
tls_bufferevent_free(struct bufferevent *bev, enum tls_goodbye goodbye)
{
    struct bufferevent *sock = bufferevent_get_underlying(bev);
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    struct evbuffer *queued;

    /* One call: the alert goes out now; we do not wait for the peer's. */
    if (goodbye == TLS_CLOSE_NOTIFY && ssl != NULL && SSL_shutdown(ssl) < 0) ERR_clear_error();
    if (sock != NULL) {
        queued = bufferevent_get_output(sock);
        /* A socket bufferevent freezes its output's front outside its own writes. */
        evbuffer_unfreeze(queued, 1);
        if (evbuffer_get_length(queued) > 0) linger_start(sock);
    }
    bufferevent_free(bev);
}

void
tls_linger_free_all(void)
{
    while (lingering != NULL)
        linger_free(lingering);
}

/* A deferred connect (TCP_FASTOPEN_CONNECT) sends its SYN on the first write. With a cookie
 * for the server, the SYN carries the ClientHello and the server answers with its whole first
 * flight one round trip after the dial began, instead of two. Without one, write() sends a
 * plain SYN that asks for a cookie and fails with EINPROGRESS, taking nothing: libevent would
 * count that as a write error, so this first write is ours, and libevent writes the queue once
 * the connection is up, as for any connect. Only the ClientHello is early, and TLS makes a
 * replayed one harmless (a SYN's data can be replayed; the server's answer goes nowhere). */
void
tls_fastopen_send(struct bufferevent *bev)
{
    struct bufferevent *sock = bufferevent_get_underlying(bev);

    if (sock != NULL)
        (void)writethrough_send_queued(sock); /* EINPROGRESS, EAGAIN: libevent writes it later */
}

int
tls_fastopen_listen(int fd)
{
    int qlen = 256, mode = 0; /* qlen: handshakes in flight whose SYN carried data */
    FILE *f;

    if (setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN, &qlen, sizeof(qlen)) != 0) return 0;
    /* The host decides: bit 2 of the sysctl lets listeners take data in a SYN. */
    f = fopen("/proc/sys/net/ipv4/tcp_fastopen", "r");
    if (f != NULL) {
        if (fscanf(f, "%d", &mode) != 1) mode = 0;
        fclose(f);
    }
    return (mode & 2) != 0;
}

int
tls_revoked(SSL *ssl, const char *crl_path)
{
    X509 *cert = SSL_get1_peer_certificate(ssl);
    X509_CRL *crl = NULL;
    X509_REVOKED *rev = NULL;
    FILE *f;
    int r = 0;

    if (cert == NULL) return 0;
    f = fopen(crl_path, "r");
    if (f != NULL) {
        /* The file may hold several CRLs (one per CA): any that lists it. */
        while (r == 0 && (crl = PEM_read_X509_CRL(f, NULL, NULL, NULL)) != NULL) {
            r = X509_CRL_get0_by_cert(crl, &rev, cert) == 1;
            X509_CRL_free(crl);
        }
        fclose(f);
    }
    ERR_clear_error(); /* the read that ended the loop left its end-of-file error */
    X509_free(cert);
    return r;
}

void
tls_peer_identity(SSL *ssl, char *subject, size_t slen, char *fp_hex, size_t flen)
{
    static const char hex[] = "0123456789abcdef";
    X509 *cert = SSL_get1_peer_certificate(ssl);
    unsigned char fp[32];
    unsigned int n = 0, i;
    BIO *b;
    int got;

    subject[0] = fp_hex[0] = 0;
    if (cert == NULL) return;
    b = BIO_new(BIO_s_mem());
    if (b != NULL && X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
        got = BIO_read(b, subject, (int)slen - 1);
        subject[got > 0 ? got : 0] = 0;
    }
    BIO_free(b);
    if (flen >= 65 && X509_digest(cert, EVP_sha256(), fp, &n) == 1 && n == 32) {
        for (i = 0; i < 32; i++) {
            fp_hex[2 * i] = hex[fp[i] >> 4];
            fp_hex[2 * i + 1] = hex[fp[i] & 15];
        }
        fp_hex[64] = 0;
    }
    X509_free(cert);
}
