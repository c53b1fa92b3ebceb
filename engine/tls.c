/* tls.c: the TLS policy in one place. Both contexts pin TLS >= 1.2 with AEAD suites only;
 * TLS 1.3 suites are all AEAD already. Sessions resume on the client (a ticket per server). */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

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
    if (cfg->tls_server_ca[0] != 0) {
        if (readable("tls.server.ca", cfg->tls_server_ca, err, errlen) == -1) goto err;
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_server_ca, NULL) != 1) {
            ssl_err(err, errlen, "tls.server.ca", cfg->tls_server_ca);
            goto err;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
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

    if (ssl == NULL) return NULL;
    if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
    } else {
        SSL_set_tlsext_host_name(ssl, name);
        SSL_set1_host(ssl, name);
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

void
tls_errors(struct bufferevent *bev, char *out, size_t len)
{
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
        if (n + strlen(r) + 3 < len)
            n += (size_t)snprintf(out + n, len - n, "%s%s", n ? "; " : "", r);
    }
    ERR_clear_error();
}
