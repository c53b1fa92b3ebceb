/* fuzz_dgram.c: UDP datagrams as they arrive. The first input byte picks the parser (odd: the
 * SOCKS5 header an app puts before a datagram it sends to the relay; even: the payload of a
 * ReMux UDP session's frame, its records parsed to the end, as udpsess.c does). What parses
 * re-encodes to exactly the bytes it used, and never reaches past the input. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "../engine/dgram.h"
#include "../engine/socks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t out[FRAME_MAX_PAYLOAD + 8];

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct socks_req a;
    const uint8_t *p, *d;
    const char *err = NULL;
    size_t used = 0, n, off = 0, dlen;
    int rc;

    if (size < 1) return 0;
    p = data + 1;
    n = size - 1;
    if (data[0] & 1) {
        rc = socks_parse_udp(p, n, &used, &a, &err);
        if (rc != SOCKS_OK) {
            assert(rc == SOCKS_ERR && err != NULL);
            return 0;
        }
        assert(used <= n && a.cmd == SOCKS_CMD_UDP);
        assert(3 + socks_encode_addr(out + 3, &a) == used && memcmp(out + 3, p + 3, used - 3) == 0);
        return 0;
    }
    while (off < n) {
        rc = dgram_parse_record(p + off, n - off, &used, &a, &d, &dlen, &err);
        if (rc != SOCKS_OK) {
            assert(rc == SOCKS_ERR && err != NULL);
            return 0;
        }
        assert(used > 0 && off + used <= n && d + dlen == p + off + used);
        /* A record that parsed is one the sender could have built, unless it is longer than any
         * sender builds (dgram_record_len refuses it): byte for byte. */
        if (dgram_record_len(&a, dlen) == used) {
            dgram_encode_record(out, &a, d, dlen);
            assert(memcmp(out, p + off, used) == 0);
        }
        off += used;
    }
    return 0;
}
