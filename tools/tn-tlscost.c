/* tn-tlscost: what a pool rotation costs in TLS. Handshakes between the engine's own client and
 * server contexts (engine/tls.c: the same versions, suites, verification and session handling
 * as `tunnels`), in memory through a BIO pair, so no socket or kernel time is counted: the CPU
 * time of each end (CLOCK_THREAD_CPUTIME_ID around its own calls), from SSL_new to SSL_free.
 *   tn-tlscost -dir D [-n N]
 * D holds ca.pem, server.pem/.key and client.pem/.key (scripts/certs.sh); server name
 * localhost. N resumed handshakes (each on the ticket the one before it got, as the pool
 * dials), after one full handshake, which is also timed. Prints one line of key=value pairs:
 * full_client_us full_server_us resumed_client_us resumed_server_us openssl. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "../engine/config.h"
#include "../engine/flags.h"
#include "../engine/tls.h"

static SSL_SESSION *ticket; /* the newest; a TLS 1.3 ticket is for one use */

static int
keep_ticket(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (ticket != NULL) SSL_SESSION_free(ticket);
    ticket = sess;
    return 1;
}

static double
cpu_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Runs f(ssl) and adds its CPU time to *acc. */
static int
timed(int (*f)(SSL *), SSL *ssl, double *acc)
{
    double t = cpu_us();
    int r = f(ssl);

    *acc += cpu_us() - t;
    return r;
}

/* Reads what is pending (the server's tickets, its one byte): a client that read nothing
 * would never see its tickets. */
static int
drain(SSL *ssl)
{
    char buf[4096];

    return SSL_read(ssl, buf, sizeof(buf));
}

static int
send_byte(SSL *ssl)
{
    return SSL_write(ssl, "x", 1);
}

static int
close_free(SSL *ssl)
{
    SSL_shutdown(ssl);
    SSL_free(ssl);
    return 0;
}

/* One connection: both ends in turn until both are done, then the server's first byte read
 * by the client (the tickets come with it). Returns 1 if resumed, 0 if full, -1 on failure;
 * both ends are freed either way (one close path). */
static int
one(SSL_CTX *cctx, SSL_CTX *sctx, double *cc, double *sc)
{
    double t = cpu_us();
    SSL *c = tls_client_ssl(cctx, "localhost"), *s = NULL;
    BIO *cb, *sb;
    int i, cdone = 0, sdone = 0, r = -1;

    if (c == NULL) return -1;
    if (ticket != NULL) {
        SSL_set_session(c, ticket);
        SSL_SESSION_free(ticket);
        ticket = NULL;
    }
    SSL_set_connect_state(c);
    *cc += cpu_us() - t;
    t = cpu_us();
    s = SSL_new(sctx);
    if (s == NULL) goto out;
    SSL_set_accept_state(s);
    *sc += cpu_us() - t;
    if (BIO_new_bio_pair(&cb, 0, &sb, 0) != 1) goto out;
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    for (i = 0; i < 20 && !(cdone && sdone); i++) {
        if (!cdone) cdone = timed(SSL_do_handshake, c, cc) == 1;
        if (!sdone) sdone = timed(SSL_do_handshake, s, sc) == 1;
    }
    if (!cdone || !sdone) {
        ERR_print_errors_fp(stderr);
        goto out;
    }
    if (timed(send_byte, s, sc) != 1 || timed(drain, c, cc) != 1) goto out;
    r = SSL_session_reused(c);
out:
    timed(close_free, c, cc);
    if (s != NULL) timed(close_free, s, sc);
    return r;
}

static int
usage(void)
{
    fprintf(stderr, "usage: tn-tlscost -dir D [-n N]\n");
    return 2;
}

int
main(int argc, char **argv)
{
    struct config scfg, ccfg;
    char err[512], a[6][600];
    const char *dir = NULL;
    SSL_CTX *sctx, *cctx;
    double fc = 0, fs = 0, rc = 0, rs = 0;
    long n = 2000, i;
    int status = 1;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "-n") == 0)
            n = strtol(argv[i + 1], NULL, 10);
        else
            return usage();
    }
    if (dir == NULL || i != argc || n < 1) return usage();
    snprintf(a[0], sizeof(a[0]), "-tls.server.cert=%s/server.pem", dir);
    snprintf(a[1], sizeof(a[1]), "-tls.server.key=%s/server.key", dir);
    snprintf(a[2], sizeof(a[2]), "-tls.server.ca=%s/ca.pem", dir);
    snprintf(a[3], sizeof(a[3]), "-tls.client.ca=%s/ca.pem", dir);
    snprintf(a[4], sizeof(a[4]), "-tls.client.cert=%s/client.pem", dir);
    snprintf(a[5], sizeof(a[5]), "-tls.client.key=%s/client.key", dir);
    {
        char *sargv[] = {"tn-tlscost", "-role=server", "-server.addr=127.0.0.1:1",
                         a[0],         a[1],           a[2]};
        char *cargv[] = {"tn-tlscost",
                         "-role=client",
                         "-server.addr=127.0.0.1:1",
                         "-tls.client.name=localhost",
                         a[3],
                         a[4],
                         a[5]};

        flags_defaults(&scfg);
        flags_defaults(&ccfg);
        if (flags_parse(6, sargv, &scfg, err, sizeof(err)) != 0 ||
            flags_parse(7, cargv, &ccfg, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s\n", err);
            return 2;
        }
    }
    sctx = tls_server_ctx(&scfg, err, sizeof(err));
    cctx = sctx != NULL ? tls_client_ctx(&ccfg, err, sizeof(err)) : NULL;
    if (cctx == NULL) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    /* As the pool keeps tickets (engine/pool.c), without its store. */
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(cctx, keep_ticket);
    if (one(cctx, sctx, &fc, &fs) != 0) {
        fprintf(stderr, "tn-tlscost: the first handshake failed or was resumed\n");
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (one(cctx, sctx, &rc, &rs) != 1) {
            fprintf(stderr, "tn-tlscost: handshake %ld was not resumed\n", i + 2);
            goto out;
        }
    }
    printf("full_client_us=%.0f full_server_us=%.0f resumed_client_us=%.0f "
           "resumed_server_us=%.0f n=%ld openssl=%s\n",
           fc, fs, rc / (double)n, rs / (double)n, n, OpenSSL_version(OPENSSL_VERSION_STRING));
    status = 0;
out: /* one close path: a context made before a failure is freed too */
    if (ticket != NULL) SSL_SESSION_free(ticket);
    SSL_CTX_free(cctx); /* NULL is a no-op */
    SSL_CTX_free(sctx);
    return status;
}
