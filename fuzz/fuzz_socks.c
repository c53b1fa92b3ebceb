/* fuzz_socks.c: the first input byte picks the parser (mod 3: 0 the greeting, 1 the request,
 * which is also the EagerSocks header, 2 the RFC 1929 username/password request); the rest is
 * what a client sends. A request that parses
 * re-encodes to exactly the bytes it used; the formatted destination is always terminated. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "../engine/socks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct socks_req r;
    uint8_t out[SOCKS_REQ_MAX];
    char dest[SOCKS_DEST_MAX];
    const char *err = NULL;
    size_t used = 0, n;
    char user[256], pass[256];
    int methods = 0, rc;

    if (size < 1) return 0;
    if (data[0] % 3 == 2) {
        rc = socks_parse_auth(data + 1, size - 1, &used, user, pass, &err);
        if (rc == SOCKS_OK) assert(used <= size - 1 && strlen(user) > 0 && strlen(user) < 256);
        if (rc == SOCKS_ERR) assert(err != NULL);
        return 0;
    }
    if (data[0] % 3 == 0) {
        rc = socks_parse_greeting(data + 1, size - 1, &used, &methods, &err);
        if (rc == SOCKS_OK) assert(used >= 3 && used <= size - 1);
        if (rc == SOCKS_ERR) assert(err != NULL);
        return 0;
    }
    rc = socks_parse_request(data + 1, size - 1, &used, &r, &err);
    if (rc == SOCKS_ERR) assert(err != NULL);
    if (rc != SOCKS_OK) return 0;
    assert(used <= size - 1 && used <= SOCKS_REQ_MAX);
    n = socks_encode_request(out, &r);
    assert(n == used && memcmp(out, data + 1, n) == 0);
    socks_format_dest(&r, dest, sizeof(dest));
    assert(memchr(dest, 0, sizeof(dest)) != NULL);
    return 0;
}
