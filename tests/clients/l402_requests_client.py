#!/usr/bin/env python3
"""Drives the third-party client l402-requests (PyPI, pinned 0.9.0) against the proxy, for
tests/it/clients.rs.

Usage: l402_requests_client.py URL WALLET_URL

One GET of URL through `L402Client(wallet=..., budget=None)`; the wallet pays each invoice at
the proxy's dev wallet (`POST WALLET_URL/pay {"invoice"}` -> `{"preimage"}`). Prints one JSON
line: the final status and body, every request the client sent (its `Authorization` scheme and
the answer's status), the decoded Payment credential if it sent one, and the parsed
`Payment-Receipt`. Exit 3 (with {"missing": ...}) when l402-requests 0.9.0 is not installed, 1 on
an error (with {"error": ...}).
"""

import base64
import json
import sys
import urllib.request

VERSION = "0.9.0"

try:
    import l402_requests
    from l402_requests import L402Client
    from l402_requests.wallets import WalletBase
except ImportError as e:
    print(json.dumps({"missing": f"l402-requests is not installed ({e})"}))
    sys.exit(3)

if l402_requests.__version__ != VERSION:
    print(json.dumps({"missing": f"l402-requests {l402_requests.__version__} is installed, not {VERSION}"}))
    sys.exit(3)


def b64url_json(text):
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def main():
    url, wallet_url = sys.argv[1], sys.argv[2]
    paid = []

    class DevWallet(WalletBase):
        async def pay_invoice(self, bolt11: str) -> str:
            body = json.dumps({"invoice": bolt11}).encode()
            req = urllib.request.Request(
                wallet_url + "/pay", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                preimage = json.load(resp)["preimage"]
            paid.append(bolt11)
            return preimage

    exchanges = []

    def on_response(response):
        auth = response.request.headers.get("authorization")
        exchanges.append(
            {
                "authorization": auth.split(" ", 1)[0] if auth else None,
                "status": response.status_code,
                "www_authenticate": response.headers.get_list("www-authenticate"),
            }
        )
        if auth and auth.startswith("Payment "):
            exchanges[-1]["credential"] = b64url_json(auth.split(" ", 1)[1])

    client = L402Client(
        wallet=DevWallet(), budget=None, event_hooks={"response": [on_response]}, timeout=30
    )
    r = client.get(url)
    receipt = getattr(r, "payment_receipt", None)
    print(
        json.dumps(
            {
                "client": "l402-requests",
                "version": l402_requests.__version__,
                "status": r.status_code,
                "body": r.text,
                "invoices_paid": len(paid),
                "exchanges": exchanges,
                "receipt": None
                if receipt is None
                else {
                    "challengeId": receipt.challenge_id,
                    "method": receipt.method,
                    "reference": receipt.reference,
                    "status": receipt.status,
                    "timestamp": receipt.timestamp,
                },
            }
        )
    )


try:
    main()
except Exception as e:  # noqa: BLE001 - reported to the Rust test as JSON
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit(1)
