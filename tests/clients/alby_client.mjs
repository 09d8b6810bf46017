// Drives the third-party client @getalby/lightning-tools (npm, pinned 9.0.1 in package.json)
// against the proxy, for tests/it/clients.rs.
//
// Usage: node alby_client.mjs mpp|402 URL WALLET_URL
//
// `mpp` calls `fetchWithMpp`, `402` calls `fetch402` (both from "@getalby/lightning-tools/402"),
// with a wallet that pays each invoice at the proxy's dev wallet
// (`POST WALLET_URL/pay {"invoice"}` -> `{"preimage"}`). Prints one JSON line: the final status
// and body, every request the client sent (its `Authorization` scheme, the answer's status),
// the decoded Payment credential if it sent one, the `Payment-Receipt` (raw and decoded) and
// `response.payment`. Exit 3 (with {"missing": ...}) when the package is not installed in
// tests/clients/node_modules at the pinned version, 1 on an error (with {"error": ...}).

import { readFile } from "node:fs/promises";

const PACKAGE = "@getalby/lightning-tools";

async function load() {
  const want = JSON.parse(await readFile(new URL("./package.json", import.meta.url))).dependencies[PACKAGE];
  let mod, have;
  try {
    const manifest = new URL(`./node_modules/${PACKAGE}/package.json`, import.meta.url);
    have = JSON.parse(await readFile(manifest)).version;
    mod = await import(`${PACKAGE}/402`);
  } catch (e) {
    return { missing: `${PACKAGE} is not installed in tests/clients/node_modules (${e.message})` };
  }
  if (have !== want) {
    return { missing: `${PACKAGE} ${have} is installed, not ${want} (run npm ci in tests/clients)` };
  }
  return { mod, version: have };
}

const b64urlJson = (text) => JSON.parse(Buffer.from(text, "base64url").toString("utf8"));

async function main() {
  const [mode, url, walletUrl] = process.argv.slice(2);
  const loaded = await load();
  if (loaded.missing) {
    console.log(JSON.stringify({ missing: loaded.missing }));
    process.exit(3);
  }
  const { fetchWithMpp, fetch402 } = loaded.mod;

  const realFetch = globalThis.fetch;
  const paid = [];
  const wallet = {
    payInvoice: async ({ invoice }) => {
      const resp = await realFetch(`${walletUrl}/pay`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ invoice }),
      });
      if (resp.status !== 200) {
        throw new Error(`dev wallet: ${resp.status} ${await resp.text()}`);
      }
      paid.push(invoice);
      return { preimage: (await resp.json()).preimage };
    },
  };

  // The client calls the global fetch: record what it sends and what it gets.
  const exchanges = [];
  globalThis.fetch = async (input, init) => {
    const auth = new Headers(init?.headers ?? undefined).get("authorization");
    const resp = await realFetch(input, init);
    const seen = {
      authorization: auth ? auth.split(" ")[0] : null,
      status: resp.status,
      www_authenticate: resp.headers.get("www-authenticate"),
    };
    if (auth && auth.startsWith("Payment ")) {
      seen.credential = b64urlJson(auth.slice("Payment ".length));
    }
    exchanges.push(seen);
    return resp;
  };

  const run = mode === "mpp" ? fetchWithMpp : mode === "402" ? fetch402 : null;
  if (!run) {
    throw new Error(`unknown mode ${mode}: mpp or 402`);
  }
  const res = await run(url, {}, { wallet });
  const receipt = res.headers.get("payment-receipt");
  const payment = res.payment
    ? { paid: res.payment.paid, amountSat: res.payment.amountSat, preimage: res.payment.preimage ?? null }
    : null;
  console.log(
    JSON.stringify({
      client: PACKAGE,
      version: loaded.version,
      status: res.status,
      body: await res.text(),
      invoices_paid: paid.length,
      exchanges,
      receipt: receipt ? b64urlJson(receipt) : null,
      receipt_raw: receipt,
      payment,
    }),
  );
}

main().catch((e) => {
  console.log(JSON.stringify({ error: `${e?.name}: ${e?.message}` }));
  process.exit(1);
});
