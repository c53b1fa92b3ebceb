/* replay.c: runs a fuzz target over files, without libFuzzer (any compiler), so `make test`
 * replays the checked-in corpus and every crash ever found: replay FILE... */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
main(int argc, char **argv)
{
    static uint8_t buf[1 << 20];
    int i, n = 0;

    for (i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        size_t len;
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        n++;
    }
    printf("replayed %d inputs\n", n);
    return 0;
}
