// Durability of the ledger: `kill -9` of the gateway under streaming load, a restart on the same
// store, and every request whose stream a client saw complete is in the ledger exactly once.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  MODEL, ledger, messages, openai, removeDir, sleep, startPowerplane, stopProcess, tempDir,
  withTimeout,
} from './powerplane.mjs';

const CLIENTS = 16;
const LOAD_MS = 2000;       // load at least this long before the kill,
const MIN_COMPLETED = 60;   // and until this many streams completed (at most MAX_LOAD_MS).
const MAX_LOAD_MS = 15000;

const dataDir = tempDir('pp-e2e-kill9-');
// Engine speed 4: a 60-token stream lasts ~150 ms in the gateway. Shorter streams (20 tokens,
// ~50 ms) were sometimes all already delivered, their last bytes waiting in the clients' sockets,
// when a loaded machine's clients noticed the kill: nothing was cut and the test meant little.
const MAX_TOKENS = 60;
const upArgs = ['up', '--listen', '127.0.0.1:0', '--engine-speed', '4', '--log-level', 'warn',
                '--data-dir', dataDir];
let gw;

after(async () => {
  await stopProcess(gw?.proc);
  removeDir(dataDir);
});

test('after kill -9 under load, every completed stream is in the ledger exactly once', async (t) => {
  gw = await startPowerplane(upArgs);
  const client = openai(gw.baseURL);
  const completed = [];  // x-request-id of each stream the client saw to its end without error
  let failed = 0;        // streams cut by the kill (or refused while it happened)
  let inFlight = 0;
  let maxInFlightAtKill = 0;
  let stop = false;

  // One client: streams back to back until told to stop.
  const worker = async () => {
    while (!stop) {
      inFlight++;
      try {
        const { data: stream, response } = await client.chat.completions
          .create({ model: MODEL, messages, max_tokens: MAX_TOKENS, stream: true }).withResponse();
        for await (const chunk of stream) void chunk;
        completed.push(response.headers.get('x-request-id'));
      } catch {
        failed++;
      } finally {
        inFlight--;
      }
    }
  };
  const workers = Array.from({ length: CLIENTS }, worker);

  const loadStart = Date.now();
  await sleep(LOAD_MS);
  while (completed.length < MIN_COMPLETED && Date.now() - loadStart < MAX_LOAD_MS) await sleep(100);
  maxInFlightAtKill = inFlight;
  const exited = new Promise((resolve) => gw.proc.once('exit', (code, signal) => resolve(signal)));
  gw.proc.kill('SIGKILL');
  stop = true;
  assert.equal(await withTimeout(exited, 10000, 'exit after SIGKILL'), 'SIGKILL');
  // Each client's request in flight fails once the socket closes (the client timeout is 30 s).
  await withTimeout(Promise.all(workers), 40000, 'clients after the kill');

  t.diagnostic(`${completed.length} streams completed, ${failed} cut, ${maxInFlightAtKill} in flight at the kill`);
  assert.ok(maxInFlightAtKill > 0, 'requests were in flight when the gateway was killed');
  assert.ok(failed > 0, 'the kill cut some streams');
  assert.ok(completed.length > 50, `only ${completed.length} streams completed: the test means little`);
  assert.ok(completed.every((id) => /^req_/.test(id ?? '')), 'every completed stream had an x-request-id');
  assert.equal(new Set(completed).size, completed.length, 'request ids are unique');

  gw = await startPowerplane(upArgs);
  const rows = await ledger(gw.root);
  const count = new Map();
  for (const r of rows) count.set(r.request_id, (count.get(r.request_id) ?? 0) + 1);
  const missing = completed.filter((id) => !count.has(id));
  const doubled = completed.filter((id) => count.get(id) > 1);
  assert.deepEqual(missing, [], `${missing.length} of ${completed.length} completed requests missing`);
  assert.deepEqual(doubled, [], 'requests in the ledger more than once');
  for (const [id, n] of count) assert.equal(n, 1, `${id} has ${n} ledger rows`);
  t.diagnostic(`ledger after restart: ${rows.length} rows`);

  // The restarted gateway serves, and records that too.
  const { data, response } = await openai(gw.baseURL).chat.completions
    .create({ model: MODEL, messages, max_tokens: 4 }).withResponse();
  assert.equal(data.usage.completion_tokens, 4);
  const rowsNow = await ledger(gw.root);
  assert.equal(rowsNow.filter((r) => r.request_id === response.headers.get('x-request-id')).length, 1);
});
