"""A DNS server for the doctor tests: TXT records from a JSON zone file, over UDP and TCP
on 127.0.0.1.

usage: dns.py ZONE.json    prints the port it listens on (UDP and TCP), then serves until
killed. The zone is {"name": [["string", ...], ...]}: each record a list of strings (long
DKIM keys take several). It is read again for every query, so a test may rewrite it.
A name not in the zone is NXDOMAIN; a name in it answers its TXT records to any type asked
for TXT, and nothing for other types.
"""

import json
import os
import sys
import time

from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSServer


class ZoneResolver(BaseResolver):
    def __init__(self, path):
        self.path = path

    def resolve(self, request, handler):
        reply = request.reply()
        with open(self.path) as f:
            zone = {k.lower().rstrip("."): v for k, v in json.load(f).items()}
        name = str(request.q.qname).lower().rstrip(".")
        if name not in zone:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype == QTYPE.TXT:
            for strings in zone[name]:
                reply.add_answer(
                    RR(request.q.qname, QTYPE.TXT, ttl=1, rdata=TXT([s.encode() for s in strings]))
                )
        return reply


def main():
    resolver = ZoneResolver(sys.argv[1])
    # UDP and TCP on one port: the UDP port is the kernel's pick, and its TCP twin may be
    # taken by another process (seen under a loaded CI run), so pick again until both bind.
    for _ in range(50):
        udp = DNSServer(resolver, port=0, address="127.0.0.1", tcp=False)
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, port=port, address="127.0.0.1", tcp=True)
            break
        except OSError:
            udp.server.server_close()
    else:
        sys.exit("dns.py: found no port free for both UDP and TCP")
    udp.start_thread()
    tcp.start_thread()
    print(port, flush=True)
    # dnslib logs each query on stdout; the test reads only the port.
    sys.stdout = open(os.devnull, "w")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
