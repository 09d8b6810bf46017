#!/usr/bin/env python3
"""Drives grpcio (PyPI, pinned 1.85.1: gRPC's C-core HTTP/2 stack, not tonic's) against the
proxy, for tests/it/grpc_py.rs: the echo service of tests/proto/echo.proto through grpc's generic
calls with hand-written protobuf (no code generation: Msg is {1: text, 2: seq}, CountReq {1: n}).

Usage: grpcio_client.py TARGET MACAROON MODE [ARG]

TARGET is host:port (h2c, prior knowledge); MACAROON the hex `macaroon` metadata to send, or `-`
for none. MODE:
  say LEN      unary Say with a LEN-character text; checks the echo byte for byte
  count N      server streaming Count(N); checks every message's seq and text, in order
  chat N       bidi Chat in lockstep: each message's reply before the next is sent
  fail TEXT    unary Fail(TEXT)
Prints one JSON line: the status code name and details, the initial and trailing metadata (as
[key, value] pairs, binary values in hex), and what the mode checked. Exit 3 (with
{"missing": ...}) when grpcio 1.85.1 is not installed.
"""

import json
import queue
import sys

VERSION = "1.85.1"
TIMEOUT = 60

try:
    import grpc
except ImportError as e:
    print(json.dumps({"missing": f"grpcio is not installed ({e})"}))
    sys.exit(3)

if grpc.__version__ != VERSION:
    print(json.dumps({"missing": f"grpcio {grpc.__version__} is installed, not {VERSION}"}))
    sys.exit(3)

SERVICE = "/aperture.test.Echo/"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def msg(text, seq):
    data = text.encode()
    out = b""
    if data:
        out += b"\x0a" + varint(len(data)) + data
    if seq:
        out += b"\x10" + varint(seq)
    return out


def parse_msg(buf):
    text, seq, i = "", 0, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        if key == 0x0A:
            n, i = read_varint(buf, i)
            text = buf[i : i + n].decode()
            i += n
        elif key == 0x10:
            seq, i = read_varint(buf, i)
        else:
            raise ValueError(f"unexpected field key {key}")
    return text, seq


def count_req(n):
    return b"\x08" + varint(n) if n else b""


def pairs(metadata):
    out = []
    for key, value in metadata or ():
        out.append([key, value.hex() if isinstance(value, bytes) else value])
    return out


def status_of(call, err=None):
    source = err if err is not None else call
    return {
        "code": source.code().name,
        "details": source.details(),
        "initial": pairs(source.initial_metadata()),
        "trailing": pairs(source.trailing_metadata()),
    }


def pattern(n):
    return "".join(chr(ord("a") + i % 26) for i in range(n))


def say(channel, metadata, n):
    call = channel.unary_unary(SERVICE + "Say")
    text = pattern(n)
    try:
        reply, c = call.with_call(msg(text, 3), metadata=metadata, timeout=TIMEOUT)
    except grpc.RpcError as e:
        return status_of(None, e)
    got, seq = parse_msg(reply)
    out = status_of(c)
    out.update({"seq": seq, "len": len(got), "intact": got == "echo: " + text})
    return out


def count(channel, metadata, n):
    call = channel.unary_stream(SERVICE + "Count")
    stream = call(count_req(n), metadata=metadata, timeout=TIMEOUT)
    seen, in_order = 0, True
    try:
        for reply in stream:
            text, seq = parse_msg(reply)
            in_order = in_order and seq == seen and text == f"message {seen}"
            seen += 1
    except grpc.RpcError:
        pass
    out = status_of(stream)
    out.update({"messages": seen, "in_order": in_order})
    return out


def chat(channel, metadata, n):
    call = channel.stream_stream(SERVICE + "Chat")
    outbox = queue.Queue()

    def requests():
        while True:
            item = outbox.get()
            if item is None:
                return
            yield item

    stream = call(requests(), metadata=metadata, timeout=TIMEOUT)
    lockstep = 0
    try:
        for seq in range(n):
            outbox.put(msg(f"ping {seq}", seq))
            text, got = parse_msg(next(stream))
            if (text, got) != (f"PING {seq}", seq):
                break
            lockstep += 1
        outbox.put(None)
        extra = sum(1 for _ in stream)
    except (grpc.RpcError, StopIteration):
        outbox.put(None)
        extra = -1
    out = status_of(stream)
    out.update({"lockstep": lockstep, "extra": extra})
    return out


def fail(channel, metadata, text):
    call = channel.unary_unary(SERVICE + "Fail")
    try:
        call.with_call(msg(text, 0), metadata=metadata, timeout=TIMEOUT)
    except grpc.RpcError as e:
        return status_of(None, e)
    return {"code": "OK"}


def main():
    target, macaroon, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    arg = sys.argv[4] if len(sys.argv) > 4 else ""
    metadata = [] if macaroon == "-" else [("macaroon", macaroon)]
    # grpcio's defaults (4 MiB received messages at most), as a stock client has them.
    with grpc.insecure_channel(target) as channel:
        if mode == "say":
            out = say(channel, metadata, int(arg))
        elif mode == "count":
            out = count(channel, metadata, int(arg))
        elif mode == "chat":
            out = chat(channel, metadata, int(arg))
        elif mode == "fail":
            out = fail(channel, metadata, arg)
        else:
            raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
