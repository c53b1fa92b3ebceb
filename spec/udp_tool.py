"""udp_tool.py: the UDP side of the specs, with real clients.

  udp_tool.py echo PORT [HOST]          a UDP echo server on HOST:PORT (127.0.0.1; until killed)
  udp_tool.py send SOCKS HOST:PORT... [-n N] [-size B]
                                        PySocks (python3-socks) UDP ASSOCIATE through the SOCKS5
                                        port SOCKS: N datagrams to each destination, one at a
                                        time; prints `HOST:PORT got K of N from SRC` per one
  udp_tool.py dns SOCKS SERVER:PORT NAME
                                        a DNS query for NAME's A record through SOCKS (PySocks)
                                        to SERVER:PORT; prints the addresses answered
"""
import os
import socket
import struct
import sys
import time

import socks


def echo(port, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    while True:
        data, src = s.recvfrom(65535)
        s.sendto(data, src)


def hostport(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def proxied(socks_port):
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, "127.0.0.1", socks_port)
    s.settimeout(3)
    return s


def send(socks_port, targets, n, size):
    s = proxied(socks_port)
    for t in targets:
        host, port = hostport(t)
        got, src = 0, "-"
        for i in range(n):
            payload = (b"%s #%d " % (t.encode(), i)).ljust(size, b"x")
            s.sendto(payload, (host, port))
            try:
                data, frm = s.recvfrom(65535)
            except socket.timeout:
                continue
            if data == payload:
                got += 1
                src = "%s:%d" % frm[:2]
        print("%s got %d of %d from %s" % (t, got, n, src), flush=True)
    s.close()


def dns(socks_port, server, name):
    host, port = hostport(server)
    qid = os.getpid() & 0xFFFF
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = proxied(socks_port)
    s.sendto(q, (host, port))
    data, _ = s.recvfrom(65535)
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    assert rid == qid, "answer id %d for query %d" % (rid, qid)
    off = len(q)
    out = []
    for _ in range(an):
        if data[off] & 0xC0 == 0xC0:
            off += 2
        else:
            while data[off] != 0:
                off += 1 + data[off]
            off += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        if rtype == 1:
            out.append(socket.inet_ntoa(data[off:off + rdlen]))
        off += rdlen
    print("rcode %d answers %s" % (flags & 0xF, " ".join(out) or "-"), flush=True)


def main(argv):
    if argv[0] == "echo":
        echo(int(argv[1]), *argv[2:3])
    elif argv[0] == "send":
        n, size, targets = 1, 0, []
        i = 2
        while i < len(argv):
            if argv[i] == "-n":
                n = int(argv[i + 1])
                i += 2
            elif argv[i] == "-size":
                size = int(argv[i + 1])
                i += 2
            else:
                targets.append(argv[i])
                i += 1
        send(int(argv[1]), targets, n, size)
    elif argv[0] == "dns":
        dns(int(argv[1]), argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
