// Uses mppx (npm, pinned 0.11.0 in package.json; the reference MPP SDK, no Lightning method) as an
// oracle for the proxy's Payment challenges, credentials and receipts, for tests/it/clients.rs.
//
// Usage: node mppx_oracle.mjs URL WALLET_URL
//
// GET URL (a 402); parse the joined `WWW-Authenticate` value with `Challenge.deserializeList`;
// pay the charge challenge's invoice at the dev wallet; send `Credential.serialize` of mppx's own
// echo of that challenge with the preimage; parse the answer's `Payment-Receipt` with
// `Receipt.deserialize` (its schema: status "success", an RFC 3339 timestamp); send the same
// credential again. The challenge ids cannot be checked with `Challenge.verify`: the proxy's HMAC
// key is per resource and its secret never leaves the database. Prints one JSON line. Exit 3 (with
// {"missing": ...}) when mppx is not installed at the pinned version, 1 on an error.

import { readFile } from "node:fs/promises";

const PACKAGE = "mppx";

async function load() {
  const want = JSON.parse(await readFile(new URL("./package.json", import.meta.url))).dependencies[PACKAGE];
  let mod, have;
  try {
    const manifest = new URL(`./node_modules/${PACKAGE}/package.json`, import.meta.url);
    have = JSON.parse(await readFile(manifest)).version;
    mod = await import(PACKAGE);
  } catch (e) {
    return { missing: `${PACKAGE} is not installed in tests/clients/node_modules (${e.message})` };
  }
  if (have !== want) {
    return { missing: `${PACKAGE} ${have} is installed, not ${want} (run npm ci in tests/clients)` };
  }
  return { mod, version: have };
}

async function main() {
  const [url, walletUrl] = process.argv.slice(2);
  const loaded = await load();
  if (loaded.missing) {
    console.log(JSON.stringify({ missing: loaded.missing }));
    process.exit(3);
  }
  const { Challenge, Credential, Receipt, PaymentRequest } = loaded.mod;

  const first = await fetch(url);
  const joined = first.headers.get("www-authenticate");
  const list = Challenge.deserializeList(joined);
  // The request parameters as sent, in order, to see whether mppx's re-encoding (its own JCS)
  // gives back the same bytes.
  const paymentPart = joined.slice(joined.search(/(^|,\s*)Payment /));
  const rawRequests = [...paymentPart.matchAll(/request="([^"]*)"/g)].map((m) => m[1]);
  const challenges = list.map((c, i) => ({
    id: c.id,
    realm: c.realm,
    method: c.method,
    intent: c.intent,
    expires: c.expires ?? null,
    request: c.request,
    request_reencoded_identical: PaymentRequest.serialize(c.request) === rawRequests[i],
  }));

  const charge = list.find((c) => c.intent === "charge");
  if (!charge) {
    throw new Error(`no charge challenge in ${joined}`);
  }
  const pay = await fetch(`${walletUrl}/pay`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ invoice: charge.request.methodDetails.invoice }),
  });
  if (pay.status !== 200) {
    throw new Error(`dev wallet: ${pay.status} ${await pay.text()}`);
  }
  const { preimage } = await pay.json();
  const authorization = Credential.serialize({ challenge: charge, payload: { preimage } });
  const paid = await fetch(url, { headers: { authorization } });
  const receiptHeader = paid.headers.get("payment-receipt");
  let receipt = null;
  let receiptError = null;
  if (receiptHeader) {
    try {
      receipt = Receipt.deserialize(receiptHeader);
    } catch (e) {
      receiptError = `${e?.name}: ${e?.message}`;
    }
  }
  const paidBody = await paid.text();
  const replay = await fetch(url, { headers: { authorization } });
  await replay.text();

  console.log(
    JSON.stringify({
      client: PACKAGE,
      version: loaded.version,
      first_status: first.status,
      www_authenticate: joined,
      challenges,
      credential: JSON.parse(Buffer.from(authorization.slice("Payment ".length), "base64url").toString("utf8")),
      status: paid.status,
      body: paidBody,
      www_authenticate_after: paid.headers.get("www-authenticate"),
      receipt,
      receipt_error: receiptError,
      replay_status: replay.status,
    }),
  );
}

main().catch((e) => {
  console.log(JSON.stringify({ error: `${e?.name}: ${e?.message}` }));
  process.exit(1);
});
