// Failover with external engines: examples/external-engines.toml, its four endpoints moved to
// `powerplane engine` processes on OS-chosen ports. Killing an engine: requests keep succeeding on
// the others; a stream cut mid-way ends with an OpenAI error event, then [DONE], and the ledger
// records what was delivered.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BIN, MODEL, admin, ledger, messages, openai, removeDir, startPowerplane, stopProcess,
  tempDir, withTimeout,
} from './powerplane.mjs';

const EXAMPLE = path.resolve(path.dirname(fileURLToPath(import.meta.url)),
                             '../../examples/external-engines.toml');
const EXAMPLE_PORTS = [9101, 9102, 9103, 9104];

let dir;
const engines = new Map();  // port -> child process
let gw;

// Starts `powerplane engine` on port 0 and resolves with { proc, port }.
async function startEngine() {
  const proc = spawn(BIN, ['engine', '--listen', '127.0.0.1:0', '--speed', '4', '--log-level', 'warn'],
                     { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await withTimeout(new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/on http:\/\/127\.0\.0\.1:(\d+)\/v1/);
      if (m) resolve(Number(m[1]));
    });
    proc.on('exit', (code) => reject(new Error(`engine exited ${code}`)));
  }), 20000, 'powerplane engine start').catch((e) => { proc.kill('SIGKILL'); throw e; });
  proc.stdout.resume();
  return { proc, port };
}

before(async () => {
  dir = tempDir('pp-e2e-failover-');
  let config = fs.readFileSync(EXAMPLE, 'utf8');
  for (const examplePort of EXAMPLE_PORTS) {
    const { proc, port } = await startEngine();
    engines.set(port, proc);
    config = config.replaceAll(`127.0.0.1:${examplePort}"`, `127.0.0.1:${port}"`);
  }
  const configPath = path.join(dir, 'external-engines.toml');
  fs.writeFileSync(configPath, config);
  gw = await startPowerplane(['gateway', '--config', configPath, '--listen', '127.0.0.1:0',
                              '--data-dir', path.join(dir, 'store'), '--log-level', 'error']);
});

after(async () => {
  await stopProcess(gw?.proc);
  for (const proc of engines.values()) await stopProcess(proc);
  removeDir(dir);
});

// The engine process behind an endpoint id ("tx-a/h200-0"), from /admin/fleet.
async function engineOf(endpointId) {
  const fleet = await admin(gw.root, 'GET', '/admin/fleet');
  assert.equal(fleet.status, 200, fleet.text);
  const ep = fleet.json.sites.flatMap((s) => s.endpoints).find((e) => e.id === endpointId);
  assert.ok(ep, `endpoint ${endpointId} in /admin/fleet`);
  const port = Number(ep.address.split(':').at(-1));
  assert.ok(engines.has(port), `an engine of ours on ${ep.address}`);
  return { port, proc: engines.get(port) };
}

async function kill(engine) {
  await stopProcess(engine.proc, 'SIGKILL');
  engines.delete(engine.port);
}

test('the example fleet serves: two sites, the demo keys, EU stays in the EU', async () => {
  const fleet = await admin(gw.root, 'GET', '/admin/fleet');
  assert.deepEqual(fleet.json.sites.map((s) => [s.id, s.jurisdiction, s.endpoints.length]),
                   [['tx-a', 'US', 2], ['eu-b', 'EU', 2]]);
  for (let i = 0; i < 3; i++) {
    const { response } = await openai(gw.baseURL, 'pp-eu-key').chat.completions
      .create({ model: MODEL, messages, max_tokens: 4 }).withResponse();
    assert.equal(response.headers.get('x-powerplane-site'), 'eu-b');
  }
  const r = await openai(gw.baseURL).chat.completions.create({ model: MODEL, messages, max_tokens: 4 });
  assert.equal(r.usage.completion_tokens, 4);
});

test('a stream cut mid-way ends with an error event and [DONE]; the ledger has what was delivered', async () => {
  // Raw SSE, to see the events after the error (the SDK throws at the error event).
  const res = await fetch(`${gw.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { Authorization: 'Bearer pp-demo-key', 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL, messages, max_tokens: 4000, stream: true }),
    signal: AbortSignal.timeout(30000),
  });
  assert.equal(res.status, 200);
  const requestId = res.headers.get('x-request-id');
  const engine = await engineOf(res.headers.get('x-powerplane-endpoint'));
  const events = [];
  let buffer = '';
  let killed = false;
  const decoder = new TextDecoder();
  for await (const bytes of res.body) {
    buffer += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (event.startsWith('data: ')) events.push(event.slice(6));
    }
    if (!killed && events.length >= 20) {
      killed = true;
      await kill(engine);
    }
  }
  assert.ok(killed, `the stream ended after ${events.length} events, before the kill`);
  assert.equal(events.at(-1), '[DONE]');
  const error = JSON.parse(events.at(-2)).error;
  assert.ok(error, `an error event before [DONE]: ${events.at(-2)}`);
  assert.equal(error.type, 'server_error');
  const delivered = events.slice(0, -2).map((e) => JSON.parse(e))
    .filter((c) => c.choices?.[0]?.delta?.content).length;
  assert.ok(delivered >= 20 && delivered < 4000, `delivered ${delivered}`);

  const rows = (await ledger(gw.root)).filter((r) => r.request_id === requestId);
  assert.equal(rows.length, 1);
  assert.notEqual(rows[0].outcome, 'ok');
  assert.equal(rows[0].completion_tokens, delivered, 'the ledger records what was delivered');
});

test('with one engine killed, requests keep succeeding on the others', async () => {
  const client = openai(gw.baseURL);
  const first = await client.chat.completions
    .create({ model: MODEL, messages, max_tokens: 4 }).withResponse();
  const victim = await engineOf(first.response.headers.get('x-powerplane-endpoint'));
  const victimEndpoint = first.response.headers.get('x-powerplane-endpoint');
  await kill(victim);
  // Right after the kill (before any probe noticed), then for a while: every request succeeds.
  const served = await Promise.all(Array.from({ length: 12 }, async () => {
    const { data, response } = await client.chat.completions
      .create({ model: MODEL, messages, max_tokens: 4 }).withResponse();
    assert.equal(data.usage.completion_tokens, 4);
    return response.headers.get('x-powerplane-endpoint');
  }));
  assert.ok(!served.includes(victimEndpoint), `served by the dead ${victimEndpoint}: ${served}`);
  // Streams too.
  for (let i = 0; i < 4; i++) {
    const stream = await client.chat.completions
      .create({ model: MODEL, messages, max_tokens: 8, stream: true });
    let n = 0;
    for await (const c of stream) if (c.choices[0]?.delta?.content) n++;
    assert.equal(n, 8);
  }
});
