/* dgram.c: ReMux UDP records (dgram.h). */
#include "dgram.h"

#include <string.h>

void
dgram_encode_open(uint8_t out[DGRAM_OPEN_LEN])
{
    static const uint8_t open[DGRAM_OPEN_LEN] = {5, SOCKS_CMD_UDP, 0, SOCKS_ATYP_IPV4};

    memcpy(out, open, DGRAM_OPEN_LEN);
}

static size_t
addr_len(const struct socks_req *a)
{
    if (a->atyp == SOCKS_ATYP_IPV4) return 1 + 4 + 2;
    if (a->atyp == SOCKS_ATYP_IPV6) return 1 + 16 + 2;
    return 1 + 1 + strlen(a->host) + 2;
}

size_t
dgram_record_len(const struct socks_req *a, size_t n)
{
    size_t len = 2 + addr_len(a) + n;

    return n > 0xffff || len > DGRAM_RECORD_MAX ? 0 : len;
}

void
dgram_encode_record(uint8_t *out, const struct socks_req *a, const uint8_t *data, size_t n)
{
    size_t k;

    out[0] = (uint8_t)(n >> 8);
    out[1] = (uint8_t)n;
    k = 2 + socks_encode_addr(out + 2, a);
    memcpy(out + k, data, n);
}

int
dgram_parse_record(const uint8_t *b, size_t n, size_t *used, struct socks_req *a,
                   const uint8_t **data, size_t *dlen, const char **err)
{
    size_t alen, len;
    int rc;

    if (n < 2) {
        *err = "UDP record cut off by its frame";
        return SOCKS_ERR;
    }
    len = (size_t)b[0] << 8 | b[1];
    rc = socks_parse_addr(b + 2, n - 2, &alen, a, err);
    if (rc == SOCKS_NEED || (rc == SOCKS_OK && 2 + alen + len > n)) {
        *err = "UDP record cut off by its frame";
        return SOCKS_ERR;
    }
    if (rc != SOCKS_OK) return SOCKS_ERR;
    a->cmd = SOCKS_CMD_UDP;
    *data = b + 2 + alen;
    *dlen = len;
    *used = 2 + alen + len;
    return SOCKS_OK;
}
