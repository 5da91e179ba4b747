#!/usr/bin/env python3
"""Verifies every DKIM-Signature of one message with dkimpy, an implementation independent of
Squeeze's signer (mail-auth). The public keys come from a JSON file of {"name": "TXT value"}
(e.g. {"s1._domainkey.example.com.": "v=DKIM1; k=rsa; p=..."}), served through dkimpy's
`dnsfunc`: there is no public DNS here.

Usage: verify.py KEYS.json < message.eml
Prints one JSON line: {"signatures": N, "results": [true, false, ...]}; exits 0.
"""
import json
import sys

import dkim


def main():
    with open(sys.argv[1]) as f:
        records = {k.rstrip(".").lower(): v for k, v in json.load(f).items()}
    message = sys.stdin.buffer.read()

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        value = records.get(name.rstrip(".").lower())
        return value.encode() if value is not None else None

    d = dkim.DKIM(message)
    count = sum(
        1 for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if line.lower().startswith(b"dkim-signature:")
    )
    results = []
    for i in range(count):
        try:
            results.append(bool(d.verify(idx=i, dnsfunc=dnsfunc)))
        except dkim.DKIMException as e:
            print(f"signature {i}: {e}", file=sys.stderr)
            results.append(False)
    print(json.dumps({"signatures": count, "results": results}))


if __name__ == "__main__":
    main()
