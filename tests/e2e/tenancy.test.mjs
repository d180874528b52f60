// End-to-end tenancy: `powerplane up` with its own SQLite store, tenants and keys made through the
// admin API and the keys CLI, and the official OpenAI client meeting rate limits, budgets,
// revocation and the ledger.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import OpenAI from 'openai';
import {
  BIN, MODEL, admin, ledger, messages, openai, removeDir, sleep, startPowerplane, stopProcess,
  tempDir,
} from './powerplane.mjs';

let gw;       // { proc, baseURL, root }
let dataDir;  // the store, shared with the `powerplane keys` subprocess.

before(async () => {
  dataDir = tempDir('pp-e2e-tenancy-');
  gw = await startPowerplane(['up', '--listen', '127.0.0.1:0', '--engine-speed', '4',
                              '--log-level', 'warn', '--data-dir', dataDir]);
});

after(async () => {
  await stopProcess(gw?.proc);
  removeDir(dataDir);
});

// Makes a tenant (defaults: any jurisdiction, standard class, no limits) and a key for it.
async function tenantWithKey(id, fields = {}) {
  const t = await admin(gw.root, 'POST', '/admin/tenants', { id, class: 'standard', ...fields });
  assert.equal(t.status, 200, t.text);
  const k = await admin(gw.root, 'POST', '/admin/keys', { tenant: id });
  assert.equal(k.status, 200, k.text);
  assert.equal(k.json.tenant, id);
  assert.match(k.json.key, /\S{20,}/);
  return k.json;  // { id, key, tenant, ... }
}

const ask = (client, max_tokens = 4) =>
  client.chat.completions.create({ model: MODEL, messages, max_tokens });

test('the 4th request within a minute of an rpm-3 tenant is refused with 429 and Retry-After', async () => {
  const { key } = await tenantWithKey('rpm3', { rpm: 3 });
  const client = openai(gw.baseURL, key);
  for (let i = 0; i < 3; i++) {
    const r = await ask(client);
    assert.equal(r.object, 'chat.completion');
  }
  await assert.rejects(ask(client), (e) => {
    assert.ok(e instanceof OpenAI.RateLimitError, `got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.status, 429);
    assert.equal(e.code, 'requests_per_minute');
    assert.equal(e.type, 'rate_limit_error');
    const retryAfter = e.headers?.get?.('retry-after');
    assert.ok(retryAfter, 'Retry-After header present');
    assert.ok(Number(retryAfter) >= 1, `Retry-After ${retryAfter}`);
    return true;
  });
});

test('a tenant whose budget cannot pay for one request is refused with insufficient_quota', async () => {
  const { key } = await tenantWithKey('tiny-budget', { budget_usd: 1e-7, budget_period: 'day' });
  await assert.rejects(ask(openai(gw.baseURL, key)), (e) => {
    assert.ok(e instanceof OpenAI.APIError, `got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.status, 429);
    assert.equal(e.code, 'insufficient_quota');
    assert.equal(e.type, 'insufficient_quota');
    return true;
  });
  // Nothing reached an engine, so nothing is in the ledger.
  assert.equal((await ledger(gw.root, 'tiny-budget')).length, 0);
});

test('a budget is spent, then refused; usage and the ledger agree and stay within the budget', async (t) => {
  // A request of 4 output tokens costs about 1e-5 USD on the demo fleet: a handful fit.
  const budget = 5e-5;
  const { key } = await tenantWithKey('small-budget', { budget_usd: budget, budget_period: 'day' });
  const client = openai(gw.baseURL, key);
  let served = 0;
  let refusal = null;
  for (let i = 0; i < 200 && !refusal; i++) {
    try {
      await ask(client);
      served++;
    } catch (e) {
      refusal = e;
    }
  }
  assert.ok(refusal, 'the budget ran out within 200 requests');
  assert.ok(refusal instanceof OpenAI.APIError, String(refusal));
  assert.equal(refusal.status, 429);
  assert.equal(refusal.code, 'insufficient_quota');
  assert.ok(served >= 2, `served ${served} before the budget ran out`);
  t.diagnostic(`served ${served} requests on a ${budget} USD budget`);
  // Still refused afterwards (also after the gateway's 1 s resync from the store).
  await sleep(1200);
  await assert.rejects(ask(client), (e) => e.status === 429 && e.code === 'insufficient_quota');

  const rows = await ledger(gw.root, 'small-budget');
  assert.equal(rows.length, served, 'one ledger row per served request');
  const ledgerUsd = rows.reduce((sum, r) => sum + r.charged_usd, 0);
  const usage = await admin(gw.root, 'GET', '/admin/usage?tenant=small-budget&group_by=tenant');
  assert.equal(usage.status, 200, usage.text);
  assert.equal(usage.json.data.length, 1, usage.text);
  const u = usage.json.data[0];
  assert.equal(u.group, 'small-budget');
  assert.equal(u.requests, served);
  assert.ok(Math.abs(u.charged_usd - ledgerUsd) <= 1e-12 + 1e-9 * ledgerUsd,
            `usage ${u.charged_usd} vs ledger ${ledgerUsd}`);
  // Requests went one at a time, so nothing was in flight beyond the budget's reservation.
  assert.ok(u.charged_usd <= budget * (1 + 1e-9), `spent ${u.charged_usd} of ${budget}`);
  assert.ok(u.charged_usd > 0);
});

test('a budget holds across two gateways sharing the store, under four clients at once', async (t) => {
  // A second gateway on the same SQLite store (its own port and engines).
  const gw2 = await startPowerplane(['up', '--listen', '127.0.0.1:0', '--engine-speed', '4',
                                     '--log-level', 'warn', '--data-dir', dataDir]);
  t.after(() => stopProcess(gw2.proc));
  const budget = 1e-4;  // about ten requests of 4 tokens.
  const { key } = await tenantWithKey('shared-budget', { budget_usd: budget, budget_period: 'day' });
  // The second gateway knows the key within a poll.
  const deadline = Date.now() + 5000;
  while ((await fetch(gw2.baseURL + '/models', { headers: { Authorization: `Bearer ${key}` } })).status !== 200) {
    assert.ok(Date.now() < deadline, 'the second gateway never knew the key');
    await sleep(50);
  }
  const counts = { served: 0, spent: 0, leasedElsewhere: 0 };
  const loop = async (baseURL) => {
    const client = openai(baseURL, key);
    for (let i = 0; i < 100; i++) {
      try {
        await ask(client);
        counts.served++;
      } catch (e) {
        assert.ok(e instanceof OpenAI.APIError, String(e));
        assert.equal(e.status, 429, e.message);
        if (e.code === 'insufficient_quota') {
          counts.spent++;
          return;  // spent: retrying cannot help (x-should-retry: false).
        }
        assert.equal(e.code, 'budget_leased_elsewhere', e.message);
        assert.ok(Number(e.headers?.get?.('retry-after')) >= 1, 'a Retry-After to wait for');
        counts.leasedElsewhere++;
        await sleep(100);
      }
    }
  };
  await Promise.all([loop(gw.baseURL), loop(gw.baseURL), loop(gw2.baseURL), loop(gw2.baseURL)]);
  t.diagnostic(`served ${counts.served}, spent ${counts.spent}, ` +
               `budget_leased_elsewhere ${counts.leasedElsewhere}`);
  assert.ok(counts.served >= 2, `served ${counts.served}`);
  assert.equal(counts.spent, 4, 'every client met the spent budget');
  // Either gateway's admin API reads the one ledger; rows land within the writer's batches.
  let rows = [];
  for (const until = Date.now() + 5000; Date.now() < until; await sleep(100)) {
    rows = await ledger(gw2.root, 'shared-budget');
    if (rows.length >= counts.served) break;
  }
  assert.equal(rows.length, counts.served, 'one ledger row per served request');
  const spentUsd = rows.reduce((sum, r) => sum + r.charged_usd, 0);
  assert.ok(spentUsd <= budget * (1 + 1e-9), `spent ${spentUsd} of ${budget}`);
});

test('a key revoked through the admin API is refused within a second', async () => {
  const k = await tenantWithKey('revoked');
  const client = openai(gw.baseURL, k.key);
  await ask(client);
  const del = await admin(gw.root, 'DELETE', `/admin/keys/${k.id}`);
  assert.equal(del.status, 200, del.text);
  const revokedAt = Date.now();
  let last = null;
  while (Date.now() - revokedAt < 1000) {
    try {
      await ask(client, 1);
    } catch (e) {
      last = e;
      if (e instanceof OpenAI.AuthenticationError) break;
    }
    await sleep(50);
  }
  assert.ok(last instanceof OpenAI.AuthenticationError, `got ${last}`);
  assert.equal(last.status, 401);
  // Revoking again: no live key by that id.
  assert.equal((await admin(gw.root, 'DELETE', `/admin/keys/${k.id}`)).status, 404);
  const keys = await admin(gw.root, 'GET', '/admin/keys?tenant=revoked');
  assert.equal(keys.json.data.find((x) => x.id === k.id).revoked, true);
});

test('streamed requests: every x-request-id is in the ledger exactly once', async () => {
  const { key } = await tenantWithKey('streamer');
  const client = openai(gw.baseURL, key);
  const ids = await Promise.all(Array.from({ length: 8 }, async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: MODEL, messages, max_tokens: 12, stream: true }).withResponse();
    let chunks = 0;
    for await (const chunk of stream) if (chunk.choices[0]?.delta?.content) chunks++;
    assert.equal(chunks, 12);
    const id = response.headers.get('x-request-id');
    assert.match(id ?? '', /^req_/);
    return id;
  }));
  assert.equal(new Set(ids).size, ids.length, 'request ids are unique');
  const rows = await ledger(gw.root, 'streamer');
  for (const id of ids) {
    const mine = rows.filter((r) => r.request_id === id);
    assert.equal(mine.length, 1, `${id} in the ledger ${mine.length} times`);
    assert.equal(mine[0].completion_tokens, 12);
    assert.equal(mine[0].outcome, 'ok');
    assert.equal(mine[0].tenant, 'streamer');
  }
  assert.equal(rows.length, ids.length);
});

// The tenant's ledger rows once there are `n` (polled: a cancelled request's row is written when
// the gateway notices, within about a second), at most `ms`.
async function ledgerRows(tenant, n, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const rows = await ledger(gw.root, tenant);
    if (rows.length >= n || Date.now() > end) return rows;
    await sleep(100);
  }
}

test('requests the client aborts are client_cancelled in the ledger, charged what was delivered', async () => {
  const { key } = await tenantWithKey('aborter');
  const client = openai(gw.baseURL, key);
  // A non-streaming answer of 3,000 tokens takes seconds at this engine speed; the client gives
  // up after 300 ms, before a byte of it was written.
  const controller = new AbortController();
  const pending = client.chat.completions.create(
    { model: MODEL, messages, max_tokens: 3000 }, { signal: controller.signal });
  setTimeout(() => controller.abort(), 300);
  await assert.rejects(pending, (e) => e instanceof OpenAI.APIUserAbortError);
  let rows = await ledgerRows('aborter', 1);
  assert.equal(rows.length, 1, 'the aborted request has its row');
  assert.equal(rows[0].outcome, 'client_cancelled');
  assert.equal(rows[0].completion_tokens, 0);
  const took = Date.parse(rows[0].end) - Date.parse(rows[0].start);
  assert.ok(took < 2500, `noticed ${took} ms after it started`);
  // A stream the client stops reading after ten tokens.
  const stream = await client.chat.completions.create(
    { model: MODEL, messages, max_tokens: 3000, stream: true });
  let tokens = 0;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) tokens++;
    if (tokens === 10) break;  // ends the iteration, which aborts the request.
  }
  rows = await ledgerRows('aborter', 2);
  assert.equal(rows.length, 2);
  const streamed = rows.find((r) => r.completion_tokens > 0);
  assert.ok(streamed, JSON.stringify(rows));
  assert.equal(streamed.outcome, 'client_cancelled');
  assert.ok(streamed.completion_tokens >= 10 && streamed.completion_tokens < 3000,
            `charged ${streamed.completion_tokens} tokens`);
});

// Runs `powerplane ARGS` to completion (at most `timeoutMs`); resolves { code, stdout, stderr }.
function runCli(args, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const p = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`powerplane ${args.join(' ')} ran over ${timeoutMs} ms`));
    }, timeoutMs);
    p.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

test('a key made by `powerplane keys create` on the same store works on the running gateway', async () => {
  await tenantWithKey('cli-tenant');
  const r = await runCli(['keys', 'create', '--tenant', 'cli-tenant', '--data-dir', dataDir]);
  assert.equal(r.code, 0, r.stderr);
  const key = r.stdout.match(/^key:\s+(\S+)/m)?.[1];
  assert.ok(key, r.stdout);
  const client = openai(gw.baseURL, key);
  const created = Date.now();
  let ok = null;
  let last = null;
  while (!ok && Date.now() - created < 1500) {
    try {
      ok = await ask(client, 1);
    } catch (e) {
      last = e;
      assert.ok(e instanceof OpenAI.AuthenticationError, `unexpected ${e}`);
      await sleep(50);
    }
  }
  assert.ok(ok, `the new key was still refused after 1.5 s: ${last}`);
  const listed = await runCli(['keys', 'list', '--tenant', 'cli-tenant', '--data-dir', dataDir]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.ok(!listed.stdout.includes(key), 'keys list never prints a key');

  // Revoked by another process: the gateway sees the store's version move within a second.
  const id = r.stdout.match(/^id:\s+(\S+)/m)?.[1];
  assert.ok(id, r.stdout);
  const revoke = await runCli(['keys', 'revoke', id, '--data-dir', dataDir]);
  assert.equal(revoke.code, 0, revoke.stderr);
  const revokedAt = Date.now();
  let refused = null;
  while (!refused && Date.now() - revokedAt < 1000) {
    try {
      await ask(client, 1);
      await sleep(50);
    } catch (e) {
      refused = e;
    }
  }
  assert.ok(refused instanceof OpenAI.AuthenticationError,
            `the revoked key was still served after 1 s (${refused})`);
});
