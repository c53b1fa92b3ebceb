/* tn-hook: a local HTTPS webhook receiver for the alert specs (a stand-in for DingTalk's robot).
 *   tn-hook -addr 127.0.0.1:PORT -cert C -key K -out FILE [-fail N] [-big MIB]
 * Serves one connection at a time. Each request is appended to FILE as one line:
 * "POST <target> <body>" (a DingTalk body is one line of JSON). The first N requests get
 * HTTP 500, the rest 200 {"errcode":0,"errmsg":"ok"}; with -big, every answer is 200 with a
 * body of MIB MiB (a hostile webhook). Prints "ready" once listening. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static int
serve(SSL *ssl, FILE *out, int *fail, long big)
{
    char buf[65536], *end, *cl, *sp;
    size_t n = 0, want, blen;
    int r;

    for (;;) {
        if (n == sizeof(buf) - 1) return -1;
        r = SSL_read(ssl, buf + n, (int)(sizeof(buf) - 1 - n));
        if (r <= 0) return -1;
        n += (size_t)r;
        buf[n] = 0;
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL) continue;
        cl = strcasestr(buf, "\r\nContent-Length:");
        want = (size_t)(end + 4 - buf) + (cl != NULL && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
        if (want >= sizeof(buf)) return -1;
        if (n >= want) break;
    }
    /* "POST /path?query HTTP/1.1" -> method and target */
    sp = strchr(buf, ' ');
    end = sp != NULL ? strchr(sp + 1, ' ') : NULL;
    if (end == NULL) return -1;
    blen = want - (size_t)(strstr(buf, "\r\n\r\n") + 4 - buf);
    fprintf(out, "%.*s %.*s %.*s\n", (int)(sp - buf), buf, (int)(end - sp - 1), sp + 1, (int)blen,
            buf + want - blen);
    fflush(out);
    if (big > 0) {
        long left = big << 20;
        r = snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nContent-Length: %ld\r\n\r\n", left);
        if (SSL_write(ssl, buf, r) <= 0) return -1;
        memset(buf, 'x', sizeof(buf));
        while (left > 0) {
            r = SSL_write(ssl, buf, left < (long)sizeof(buf) ? (int)left : (int)sizeof(buf));
            if (r <= 0) return -1;
            left -= r;
        }
        SSL_shutdown(ssl);
        return 0;
    }
    if (*fail > 0) {
        (*fail)--;
        r = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 6\r\n"
                     "Connection: close\r\n\r\nfailed");
    } else {
        r = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 27\r\n"
                     "Connection: close\r\n\r\n{\"errcode\":0,\"errmsg\":\"ok\"}");
    }
    SSL_write(ssl, buf, r);
    SSL_shutdown(ssl);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *addr = NULL, *cert = NULL, *key = NULL, *outp = NULL;
    char host[64];
    int fail = 0, i, lfd, one = 1, port;
    long big = 0;
    struct sockaddr_in sin;
    SSL_CTX *ctx;
    FILE *out;
    char *colon;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-addr") == 0) addr = argv[i + 1];
        if (strcmp(argv[i], "-cert") == 0) cert = argv[i + 1];
        if (strcmp(argv[i], "-key") == 0) key = argv[i + 1];
        if (strcmp(argv[i], "-out") == 0) outp = argv[i + 1];
        if (strcmp(argv[i], "-fail") == 0) fail = atoi(argv[i + 1]);
        if (strcmp(argv[i], "-big") == 0) big = atol(argv[i + 1]);
    }
    if (addr == NULL || cert == NULL || key == NULL || outp == NULL ||
        (colon = strrchr(addr, ':')) == NULL || (size_t)(colon - addr) >= sizeof(host)) {
        fprintf(stderr,
                "usage: tn-hook -addr HOST:PORT -cert C -key K -out FILE [-fail N] [-big MIB]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    port = atoi(colon + 1);
    out = fopen(outp, "a");
    ctx = SSL_CTX_new(TLS_server_method());
    if (out == NULL || ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "tn-hook: cannot set up (output file, certificate or key)\n");
        return 1;
    }
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &sin.sin_addr);
    if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(lfd, 64) != 0) {
        perror("tn-hook: listen");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct timeval tv = {5, 0};
        int fd = accept(lfd, NULL, NULL);
        SSL *ssl;
        if (fd < 0) continue;
        /* A stuck client must not stop the receiver for long. */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) serve(ssl, out, &fail, big);
        ERR_clear_error();
        SSL_free(ssl);
        close(fd);
    }
}
