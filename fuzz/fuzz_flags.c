/* fuzz_flags.c: the input, split at NUL bytes, is an argv; whole, it is a -config file's text.
 * The parser accepts each, asks for help, or refuses it with one line that starts with
 * "tunnels: ". */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/flags.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config cfg;
    char *buf, *argv[64], err[512];
    size_t i;
    int argc = 1, rc;

    if (size > 4096) return 0;
    buf = malloc(size + 1);
    if (buf == NULL) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    argv[0] = (char *)"tunnels";
    argv[argc++] = buf;
    for (i = 0; i < size && argc < 63; i++) {
        if (buf[i] == 0) argv[argc++] = buf + i + 1;
    }
    argv[argc] = NULL;
    err[0] = 0;
    rc = flags_parse(argc, argv, &cfg, err, sizeof(err));
    if (rc == FLAGS_ERR) {
        assert(strncmp(err, "tunnels: ", 9) == 0);
        assert(strchr(err, '\n') == NULL);
    }
    err[0] = 0;
    rc = flags_parse_config(1, argv, "fuzz.conf", (const char *)data, size, &cfg, err, sizeof(err));
    if (rc == FLAGS_ERR) {
        assert(strncmp(err, "tunnels: ", 9) == 0);
        assert(strchr(err, '\n') == NULL);
    }
    free(buf);
    return 0;
}
