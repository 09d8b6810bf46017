#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/TARGET/ from the inputs the unit and integration
tests use (request and response heads, chunked bodies, credentials and the golden vectors of
wire-format.md §8, PROXY v1/v2 headers, sample-conf.yaml). Re-run after changing it:
`python3 fuzz/seeds.py`. The corpus libFuzzer grows goes to fuzz/corpus-grown/ (ignored)."""
import base64, hashlib, os, struct, sys

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


REQUESTS = [
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\nConnection: keep-alive\r\n\r\n",
    "GET / HTTP/1.1\r\nA: b\r\n\r\nrest",
    "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close, x-drop\r\nX-Drop: 1\r\n\r\n",
    "GET HTTPS://api.example.com?x HTTP/1.1\r\nHost: other\r\n\r\n",
    "GET http://api.example.com:8080/paid?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
    "OPTIONS /x HTTP/1.1\r\nHost: api.example\r\nOrigin: https://a.example\r\n\r\n",
    "POST /a/b?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: t\r\nAuthorization: L402 AgEEbHNhdA:0707\r\nUpgrade: h2c\r\nTE: trailers\r\n\r\n",
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "GET / HTTP/1.1\nHost: lf-only\n\n",
]
RESPONSES = [
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 \r\n\r\n",
    "HTTP/1.1 200\r\n\r\n",
    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
    "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    "HTTP/1.1 402 Payment Required\r\nWWW-Authenticate: L402 macaroon=\"AgE=\", invoice=\"lnbc1\"\r\n\r\n",
    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 14\r\n\r\nbad macaroon\r\n",
]
for i, r in enumerate(REQUESTS):
    write("h1_request_head", f"req{i:02}", r)
for i, r in enumerate(RESPONSES):
    write("h1_response_head", f"res{i:02}", r)

# h1_chunked: byte 0 = number of split lengths that follow, then the body.
CHUNKED = [
    b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT",
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"0\r\n\r\n",
    b"000\r\n\r\nGET / HTTP/1.1\r\n",
    b"a ; name = \"quoted \\\" value\" ;n2=tok\r\n0123456789\r\n0\r\n\r\n",
    b"0\r\nX: a\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    b"0\r\nX: a\r\nY:\tb c \r\n\r\n",
    b"zz\r\n",
    b"5\r\nhelloXX",
    b"fffffffffffffff\r\n",
    b"fffffffffffffffff\r\n",
    b"3\r\nabc\r\n0;last\r\n\r\n",
]
for i, body in enumerate(CHUNKED):
    write("h1_chunked", f"body{i:02}", b"\x00" + body)
    write("h1_chunked", f"split{i:02}", b"\x03\x01\x05\x02" + body)

# l402_credential: byte 0 = mode (0 headers, 1 Authorization, 2 hex carrier, 3 V2 bytes,
# 4 identifier, 5 base64, 6 mint with caveats), byte 1 = options (service, capability, carrier).
V1 = "AgEEbHNhdAJCAABLsG+OTjp3FdIB1XPQqkI3YuVdq9YaLAInj6VsxtKU4Kurq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urAAIPc2VydmljZXM9c3ZjMTowAAIbc3ZjMV92YWxpZF91bnRpbD00MTAyNDQ0ODAwAAAGIFSd5xOagXfFWOcRZvBAiwhsczo2jqtwc3EfGPHQ16zV"
V2 = "AgEEbHNhdAJCAAB1h3u0HTk7X7hFXOYOzY3aAB0GMWSWsU36f4lWVu7KSgMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAAITc2VydmljZXM9c2VydmljZTE6MAACInNlcnZpY2UxX2NhcGFiaWxpdGllcz1hZGQsc3VidHJhY3QAAh9zZXJ2aWNlMV92YWxpZF91bnRpbD0xNzAwMDAwMDAwAAAGIIyT/ng3b4GEWaFfSvxvUs9nsmSxMHNbxwRbDWXHURl8"
P1, P2 = "07" * 32, "02" * 32
v1_raw, v2_raw = base64.b64decode(V1), base64.b64decode(V2)


def cred(name, mode, opts, payload):
    write("l402_credential", name, bytes([mode, opts]) + (payload.encode() if isinstance(payload, str) else payload))


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def v2_packet(field, data):
    return bytes([field, len(data)]) + data


# Options: service = opts % 3 (svc1, service1, other), capability = opts / 3 % 3.
cred("auth_v1", 1, 0, f"L402 {V1}:{P1}")
cred("auth_v1_lsat", 1, 0, f"LSAT {V1}:{P1.upper()}")
cred("auth_v2", 1, 4, f"L402 {V2}:{P2}")
cred("auth_v2_url", 1, 1, f"l402 {b64url(v2_raw)}:{P2}")
cred("auth_multi", 1, 0, f"L402 {V1}, {V2}:{P1}")
cred("auth_bearer", 1, 0, "Bearer abc")
cred("auth_extra_colon", 1, 0, f"L402 {V1}:{P1}:00")
cred("headers", 0, 0, f"Authorization: Bearer x\nMacaroon: {v1_raw.hex()}\nauthorization: L402 {V1}:{P1}\nGrpc-Metadata-Macaroon: 00\nToken: zz")
cred("hex_v1", 2, 0, v1_raw.hex())
cred("hex_v2_upper", 2, 1, v2_raw.hex().upper())
cred("v2_bytes_v1", 3, 0, v1_raw)
cred("v2_bytes_v2", 3, 0, v2_raw)
cred("v2_third_party", 3, 0, b"\x02" + v2_packet(2, b"id") + b"\x00" + v2_packet(1, b"loc") + v2_packet(2, b"cav") + v2_packet(4, b"vid") + b"\x00\x00" + v2_packet(6, b"s" * 32))
cred("v2_varint", 3, 0, b"\x02\x82\x00\x02id\x00\x00\x06\x20" + b"s" * 32)
cred("identifier", 4, 0, v1_raw[6:6 + 66])
cred("base64_v2", 5, 0, V2)
cred("base64_v1_url", 5, 0, b64url(v1_raw))
cred("mint_go_order", 6, 4, "services=service1:0\nservice1_capabilities=add,subtract\nservice1_valid_until=1700000000")
cred("mint_widen", 6, 0, "services=svc1:0\nservices=svc1:0,svc2:1\nsvc1_valid_until=1800000000\nvalid_until=1\n")
cred("mint_caps", 6, 3, "svc1_capabilities=add,sub\nsvc1_capabilities=add\nsvc1_capabilities=\npreimage=" + P1)
cred("mint_bad", 6, 0, "services=\nsvc1_valid_until=-1\nnoequals\npreimage=zz")

# proxy_protocol: v1 and v2 headers from the unit tests.
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(cmd, fam, body):
    return SIG + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body)) + body


PROXY = {
    "v1_tcp4": b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n",
    "v1_tcp6": b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n",
    "v1_unknown": b"PROXY UNKNOWN\r\n",
    "v1_unknown_long": b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
    "v1_bad_port": b"PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n",
    "v1_lf_only": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 1\n",
    "v2_tcp4_tlv": v2(1, 0x11, bytes([198, 51, 100, 9, 10, 0, 0, 1, 0x1F, 0x90, 0x01, 0xBB, 4, 0, 2]) + b"hi") + b"\x16\x03\x01 tls follows",
    "v2_tcp6": v2(1, 0x21, bytes(range(16)) + bytes(16) + struct.pack(">HH", 4444, 443)),
    "v2_local": v2(0, 0x00, b""),
    "v2_unspec": v2(1, 0x00, b"\x01\x02"),
    "v2_unix": v2(1, 0x31, b"/tmp/a".ljust(216, b"\0")),
    "v2_short": v2(1, 0x11, bytes(11)),
    "not_proxy": b"GET / HTTP/1.1\r\n",
}
for name, data in PROXY.items():
    write("proxy_protocol", name, data)

# config: sample-conf.yaml and small files in the shape of tests/it/config.rs.
with open(os.path.join(ROOT, "..", "sample-conf.yaml"), "rb") as f:
    # Its comments mention "!file+hex:", which the config target skips (it would read files).
    write("config", "sample-conf", f.read().replace(b"file+", b"file-"))
CONFIGS = {
    "dev": """listenaddr: "127.0.0.1:8081"
insecure: true
dbbackend: sqlite
authenticator:
  network: regtest
  dev:
    listenaddr: "127.0.0.1:8089"
services:
  - name: demo
    hostregexp: '.*'
    address: "127.0.0.1:9000"
    protocol: http
    price: 10
    auth: "on"
""",
    "full_service": """listenaddr: "0.0.0.0:8081"
insecure: true
challengeshape: pr208
upstreamauthorization: aperture
trustedproxies: ["10.0.0.0/8", "::1/128"]
proxyprotocol: true
maxheaderbytes: 65536
upstreamtimeout: 30s
authenticator:
  disable: true
services:
  - name: svc
    hostregexp: '^api\\.example\\.com(:\\d+)?$'
    pathregexp: '^/paid/.*$'
    address: "127.0.0.1:9000"
    protocol: https
    auth: "freebie 3"
    timeout: 3600
    capabilities: "add,subtract"
    constraints:
      "valid_until": "1700000000"
    headers:
      X-Api-Key: "${HOME}"
    authwhitelistpaths: ['^/free$']
    ratelimits:
      - pathregexp: '^/paid'
        requests: 10
        per: 1m
        burst: 5
challengeratelimits:
  - requests: 100
    per: 1s
""",
    "typo": "dbfile: /x\nservices: []\n",
    "anchors": "services:\n  - &a {name: a, hostregexp: 'x', address: 'h:1', price: 1}\n  - *a\n",
    "postgres": "dbbackend: postgres\npostgres:\n  host: db\n  port: 5432\n  user: u\n  password: p\n  dbname: d\n  requiressl: true\n",
}
for name, text in CONFIGS.items():
    write("config", name, text)
# mpp: byte 0 = mode (0 Authorization: Payment, 1 credential JSON, 2 Accept-Payment,
# 3 base64url, 4 JCS, 5 WWW-Authenticate challenges, 6 request JSON, 7 RFC 3339), from the
# Go vectors in src/mpp/testdata/vectors.jsonl and the unit tests.
import json

with open(os.path.join(ROOT, "..", "src", "mpp", "testdata", "vectors.jsonl")) as f:
    vectors = [json.loads(l) for l in f if l.strip() and not l.startswith("//")]
n = 0


def mpp(mode, payload):
    global n
    write("mpp", f"m{mode}_{n:03}", bytes([mode]) + (payload.encode() if isinstance(payload, str) else payload))
    n += 1


for v in vectors:
    if "encoded" in v:
        mpp(3, v["encoded"])
    if "input" in v:
        mpp(4, v["input"])
    if "credentialJson" in v:
        mpp(1, v["credentialJson"])
    if "header" in v:
        mpp(0 if v["header"].lower().startswith("payment ") and "=" not in v["header"][8:].rstrip("=") else 5, v["header"])
    if "json" in v:
        mpp(1, v["json"])
for a in ["tempo/*, solana/*;q=0.6, */session;q=0.3", " , lightning/charge ;Q=1.000 ,", "lightning/session;q=0", "*/*;q=0.5, lightning/charge"]:
    mpp(2, a)
for t in ["2023-11-14T22:13:20Z", "2026-01-01T00:00:00.123456789+05:30", "1990-12-31T23:59:60Z"]:
    mpp(7, t)
# h2n_recv: byte 0 = knob (frame size, list limit, table size), then frames as a client sends
# them after the preface. Written with Python h2's hpack and hyperframe when installed.
try:
    import hpack as _hpack
    from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame,
                                  PriorityFrame, RstStreamFrame, SettingsFrame,
                                  WindowUpdateFrame)
except ImportError:
    _hpack = None
if _hpack is not None:
    enc = _hpack.Encoder()
    paid = [(":method", "GET"), (":scheme", "http"), (":path", "/paid/x?q=1"),
            (":authority", "api.example.com"), ("authorization", "L402 " + "m" * 300 + ":" + "ab" * 32),
            ("user-agent", "seed"), ("accept", "*/*")]
    b1, b2 = enc.encode(paid), enc.encode(paid)
    grpc = enc.encode([(":method", "POST"), (":scheme", "http"), (":path", "/svc.Echo/Say"),
                       (":authority", "a"), ("content-type", "application/grpc"), ("te", "trailers")])
    conv = [SettingsFrame(0, settings={4: 1 << 20, 1: 4096}), WindowUpdateFrame(0, window_increment=1 << 20),
            HeadersFrame(1, data=b1, flags={"END_HEADERS", "END_STREAM"}),
            HeadersFrame(3, data=b2, flags={"END_HEADERS", "END_STREAM"}),
            HeadersFrame(5, data=grpc[:5]), ContinuationFrame(5, data=grpc[5:], flags={"END_HEADERS"}),
            DataFrame(5, data=b"\x00\x00\x00\x00\x02hi", flags={"PADDED"}, pad_length=3),
            HeadersFrame(5, data=enc.encode([("grpc-timeout", "1S")]), flags={"END_HEADERS", "END_STREAM"}),
            PriorityFrame(7, depends_on=5, stream_weight=10), PingFrame(0, opaque_data=b"12345678"),
            RstStreamFrame(3, error_code=8), WindowUpdateFrame(5, window_increment=100)]
    write("h2n_recv", "conversation", b"\x00" + b"".join(f.serialize() for f in conv))
    write("h2n_recv", "paid", b"\x11" + conv[2].serialize())
    write("h2n_recv", "rapid-reset", b"\x00" + b"".join(
        HeadersFrame(i, data=b1 if i == 1 else b2, flags={"END_HEADERS"}).serialize()
        + RstStreamFrame(i, error_code=8).serialize() for i in range(1, 80, 2)))
    write("h2n_recv", "continuation-flood", b"\x00" + HeadersFrame(1, data=b1[:3]).serialize()
          + b"".join(ContinuationFrame(1, data=b"").serialize() for _ in range(40)))
print("seeds written under", CORPUS)
