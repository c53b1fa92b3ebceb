/* flags.h: the Go-flag-style command line (`-name=value`, `-name value`, `-h`). Pure: it fills
 * a struct config and reports errors as text; main() prints them and picks the exit status. */
#ifndef TUNNELS_FLAGS_H
#define TUNNELS_FLAGS_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

enum { FLAGS_OK = 0, FLAGS_HELP = 1, FLAGS_ERR = -1 };

/* Sets every field of cfg to its default. */
void flags_defaults(struct config *cfg);

/* Parses argv[1..argc-1] into cfg (defaults first). Returns FLAGS_OK, FLAGS_HELP for -h / -help,
 * or FLAGS_ERR with one line in err naming the flag and the value. Cross-flag checks (a role,
 * files for TLS) are made too. */
int flags_parse(int argc, char **argv, struct config *cfg, char *err, size_t errlen);

/* The value of -config on the command line, or NULL: the caller reads the file. */
const char *flags_config_path(int argc, char **argv);

/* As flags_parse, with the len bytes of text (a -config file's, named path in errors) read after
 * the defaults and before the command line, which overrides it. One flag per line: "name =
 * value", "name value" or a bare boolean name; # starts a comment line; double quotes keep
 * blanks in a value.
 * Errors say "tunnels: PATH:LINE: -flag: ...". A NUL byte, a line over CONFIG_LINE_MAX bytes or
 * a -config inside are errors. */
#define CONFIG_LINE_MAX 4096
int flags_parse_config(int argc, char **argv, const char *path, const char *text, size_t len,
                       struct config *cfg, char *err, size_t errlen);

/* Prints every flag with its default and meaning. */
void flags_usage(FILE *out);

#endif
