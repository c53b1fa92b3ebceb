/* dgram.h: the records a ReMux UDP session carries (docs/PROTOCOL.md, "UDP sessions"): each
 * one datagram with its destination (client to server) or its source (server to client).
 * Bytes in, records out; no I/O. */
#ifndef TUNNELS_DGRAM_H
#define TUNNELS_DGRAM_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "socks.h"

/* A UDP session's EagerSocks header: `05 03 00 01 0.0.0.0 0` (UDP ASSOCIATE, no address: each
 * record names its own). */
#define DGRAM_OPEN_LEN 10
/* A record never spans frames, and the first one shares its frame with the header. */
#define DGRAM_RECORD_MAX (FRAME_MAX_PAYLOAD - DGRAM_OPEN_LEN)

void dgram_encode_open(uint8_t out[DGRAM_OPEN_LEN]);

/* The length of a record for n data bytes to or from a; 0 when it would pass
 * DGRAM_RECORD_MAX (the datagram is too large to carry). */
size_t dgram_record_len(const struct socks_req *a, size_t n);

/* Writes the record `len u16 | ATYP ADDR PORT | data` into out (dgram_record_len bytes). */
void dgram_encode_record(uint8_t *out, const struct socks_req *a, const uint8_t *data, size_t n);

/* Parses the record at the front of b (n bytes: what is left of its frame). Returns SOCKS_OK
 * with *used, *a and the data's place (*data, *dlen), or SOCKS_ERR with *err (a record cut off
 * by its frame's end, a bad address): a record is whole within its frame. */
int dgram_parse_record(const uint8_t *b, size_t n, size_t *used, struct socks_req *a,
                       const uint8_t **data, size_t *dlen, const char **err);

#endif
