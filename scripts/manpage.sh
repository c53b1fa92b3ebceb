#!/bin/sh
# manpage.sh BINARY: tunnels(1) in roff, from the binary's own -h (the flag table in
# engine/flags.c), so the page lists every flag with its default and never drifts from them.
# `make` writes build/tunnels.1 with it; `make install` installs that.
set -eu
bin=$1
# roff: a backslash is \e, a line may not start with . or ' (\& first), an option's - is \-
cat <<'HEAD'
.TH TUNNELS 1 "" "TunneLS" "User Commands"
.SH NAME
tunnels \- a TLS tunnel fast to the first byte: a local SOCKS5 proxy and its server
.SH SYNOPSIS
.B tunnels
.B \-role=client|server
[\fB\-config\fR \fIFILE\fR] [\fB\-\fIflag\fB=\fIvalue\fR ...]
.SH DESCRIPTION
The client is a local SOCKS5 proxy that answers the SOCKS handshake at once (EagerSocks) and
multiplexes its sessions over a pool of reused TLS connections (ReMux) to the server, which
connects to each destination. LuaJIT scripts decide the pool policy, the routes and the alerts.
.PP
Flags are Go-style: \fB\-name=value\fR or \fB\-name value\fR; a boolean alone means true.
\fB\-config\fR \fIFILE\fR reads flags from a file first, one a line (\fIname\fR = \fIvalue\fR,
# comment lines), and the command line overrides it.
.SH OPTIONS
HEAD
# -h: "  -name type" then "    <TAB>help (default X)"
"$bin" -h | awk '
  /^  -[a-z]/ { name = substr($1, 2); type = $2; next }
  /^    \t/ && name != "" {
    sub(/^    \t/, "")
    gsub(/\\/, "\\e")
    gsub(/-/, "\\-", name)
    print ".TP"
    if (type != "") printf("\\fB\\-%s\\fR \\fI%s\\fR\n", name, type)
    else printf("\\fB\\-%s\\fR\n", name)
    if ($0 ~ /^[.\047]/) printf("\\&")
    print
    name = ""
  }'
cat <<'TAIL'
.SH SIGNALS
.TP
.BR SIGTERM ", " SIGINT
Drain: the server sends GOAWAY, sessions in flight get \fB\-drain.sec\fR, then exit 0. A second
signal exits at once.
.TP
.B SIGHUP
Reopen the log file, reload the Lua script (the old one stays if the new one does not load)
and, on the server, the certificates, client CA and CRL.
.SH EXIT STATUS
0 after a drain or \fB\-h\fR; 1 when a file (certificate, key, script, config) cannot be read
or a listener cannot be set up; 2 for a bad flag or value, with one line naming it.
.SH FILES
.TP
.I /etc/tunnels/NAME.conf
flags of the systemd instance tunnels\-server@NAME or tunnels\-client@NAME
.SH SEE ALSO
The README and docs/ (PROTOCOL, LUA, SECURITY, ARCHITECTURE) in
/usr/share/doc/tunnels.
TAIL
