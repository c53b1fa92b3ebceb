/* fuzz_frame.c: the input is a stream of ReMux frames, as a peer would send it. Every header
 * decodes; every session-0 payload either decodes or is refused with a reason; what decodes
 * re-encodes to the same bytes. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "../engine/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct frame_hdr h;
    struct frame_ctl c;
    uint8_t out[FRAME_CTL_MAX_LEN];
    const char *err = NULL;
    size_t n;

    while (frame_decode_hdr(data, size, &h) == 1) {
        data += FRAME_HDR_LEN;
        size -= FRAME_HDR_LEN;
        if (h.len > size) break; /* a frame cut short: "need more" */
        if (h.sid == 0) {
            if (frame_decode_ctl(data, h.len, &c, &err) == 0) {
                n = frame_encode_ctl(out, &c);
                assert(n == (size_t)FRAME_HDR_LEN + h.len);
                assert(memcmp(out + FRAME_HDR_LEN, data, h.len) == 0);
            } else {
                assert(err != NULL && err[0] != 0);
            }
        }
        data += h.len;
        size -= h.len;
    }
    return 0;
}
