#!/usr/bin/env python3
"""pymacaroons 0.13.0 as an independent oracle for our macaroon codec and HMAC chain.

  pymac_oracle.py check
      exit 0 when pymacaroons 0.13.0 is importable (the Rust tests probe this first).
  pymac_oracle.py verify <root_key_hex> <base64 V2 macaroon>
      deserialize with BinarySerializer, verify with the raw root key (pymacaroons derives the
      libmacaroons key itself), accept every first-party caveat; print JSON and exit 0 when the
      signature verifies, print the error and exit 1 otherwise.
  pymac_oracle.py mint <root_key_hex> <identifier_hex> [--preimage <hex>] [caveat ...]
      mint a V2 macaroon at location 'lsat'; with --preimage, append `preimage=<hex>` as a client
      attenuation; print its BinarySerializer base64 (url-safe, unpadded).
"""
import binascii
import json
import sys


def load():
    import pymacaroons
    from pymacaroons import Macaroon, Verifier, MACAROON_V2
    from pymacaroons.serializers import BinarySerializer
    if pymacaroons.__version__ != "0.13.0":
        raise ImportError("pymacaroons %s, need 0.13.0" % pymacaroons.__version__)
    return Macaroon, Verifier, MACAROON_V2, BinarySerializer


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def verify(root_hex, b64):
    Macaroon, Verifier, _, BinarySerializer = load()
    m = Macaroon.deserialize(b64, serializer=BinarySerializer())
    seen = []
    v = Verifier()
    # Record every caveat the verifier is asked about; we check semantics in Rust.
    v.satisfy_general(lambda c: seen.append(c) is None)
    try:
        ok = v.verify(m, binascii.unhexlify(root_hex))
    except Exception as e:  # pymacaroons raises on a bad signature
        print("verify failed: %s" % e)
        return 1
    print(json.dumps({
        "verified": bool(ok),
        "location": m.location,
        "identifier": binascii.hexlify(m.identifier_bytes).decode(),
        "caveats": [text(c.caveat_id) for c in m.first_party_caveats()],
        "signature": text(m.signature),
    }))
    return 0 if ok else 1


def mint(root_hex, ident_hex, rest):
    Macaroon, _, MACAROON_V2, BinarySerializer = load()
    preimage = None
    if rest[:1] == ["--preimage"]:
        preimage, rest = rest[1], rest[2:]
    m = Macaroon(location="lsat", identifier=binascii.unhexlify(ident_hex),
                 key=binascii.unhexlify(root_hex), version=MACAROON_V2)
    for caveat in rest:
        m.add_first_party_caveat(caveat)
    if preimage is not None:
        m.add_first_party_caveat("preimage=" + preimage)
    print(m.serialize(serializer=BinarySerializer()))
    return 0


def main(argv):
    if argv[:1] == ["check"]:
        load()
        return 0
    if len(argv) == 3 and argv[0] == "verify":
        return verify(argv[1], argv[2])
    if len(argv) >= 3 and argv[0] == "mint":
        return mint(argv[1], argv[2], argv[3:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
