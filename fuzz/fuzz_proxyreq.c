/* fuzz_proxyreq.c: the requests the local port takes besides SOCKS5. The first input byte picks
 * the parser (odd: SOCKS4/4a, even: an HTTP request head); the rest is what an app sends. A
 * head that parses used no more than it was given and at most HTTPREQ_HEAD_MAX bytes; a name
 * it carries passed socks_check_name; a request to forward rewrites to an origin-form head that
 * fits the client's buffer; every refusal has a reason and an HTTP status. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "../engine/httpreq.h"
#include "../engine/socks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct httpreq h;
    struct socks_req r;
    char dest[SOCKS_DEST_MAX], name[256];
    const char *err = NULL;
    size_t used = 0;
    int rc;

    if (size < 1) return 0;
    if (data[0] % 2 == 1) {
        rc = socks_parse_v4(data + 1, size - 1, &used, &r, &err);
        if (rc == SOCKS_ERR) assert(err != NULL);
        if (rc != SOCKS_OK) return 0;
        assert(used >= 9 && used <= size - 1 && strlen(r.host) < 256);
        socks_format_dest(&r, dest, sizeof(dest));
        assert(memchr(dest, 0, sizeof(dest)) != NULL);
        return 0;
    }
    rc = httpreq_parse(data + 1, size - 1, &used, &h, &err);
    if (rc == HTTPREQ_NEED) {
        assert(size - 1 < HTTPREQ_HEAD_MAX);
        return 0;
    }
    if (rc != HTTPREQ_OK) {
        assert(err != NULL && (rc == 400 || rc == 411 || rc == 431));
        return 0;
    }
    assert(used <= size - 1 && used <= HTTPREQ_HEAD_MAX);
    assert(h.dest.port != 0 && (strcmp(h.method, "CONNECT") == 0) != h.absolute);
    if (h.absolute) {
        /* The head sent on: origin form, within the room the client gives it. */
        static uint8_t out[HTTPREQ_HEAD_MAX + 512];
        size_t n = httpreq_origin_head(data + 1, used, &h, out, sizeof(out));
        assert(n > 0 && memcmp(out, h.method, strlen(h.method)) == 0 && out[strlen(h.method)] == ' ' &&
               out[strlen(h.method) + 1] == '/');
        assert(memcmp(out + n - 21, "Connection: close\r\n\r\n", 21) == 0);
        assert(h.body >= 0);
    }
    assert(strlen(h.user) < 256 && strlen(h.pass) < 256);
    if (h.dest.atyp == SOCKS_ATYP_DOMAIN) {
        memcpy(name, h.dest.host, sizeof(name));
        assert(socks_check_name(name, &err) == 0 && strcmp(name, h.dest.host) == 0);
    }
    socks_format_dest(&h.dest, dest, sizeof(dest));
    assert(memchr(dest, 0, sizeof(dest)) != NULL);
    return 0;
}
