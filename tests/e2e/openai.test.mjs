// End-to-end: the official OpenAI npm client against `powerplane up` (the demo fleet),
// started as a real process on an OS-chosen loopback port.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';

const BIN = process.env.POWERPLANE_BIN;
let proc;
let baseURL;
let dataDir;  // a fresh tenancy store for this run, removed after.

before(async () => {
  assert.ok(BIN, 'POWERPLANE_BIN must point at the powerplane binary');
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pp-e2e-openai-'));
  proc = spawn(BIN, ['up', '--listen', '127.0.0.1:0', '--engine-speed', '4', '--log-level', 'warn',
                     '--data-dir', dataDir],
               { stdio: ['ignore', 'pipe', 'inherit'] });
  baseURL = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('powerplane did not start within 30 s')), 30000);
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d.toString();
      const m = out.match(/API:\s+(http:\/\/127\.0\.0\.1:\d+\/v1)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`powerplane exited ${code}`)); });
  });
  // The prober needs a moment to see the engines' first metrics; requests work before that too.
});

after(async () => {
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(timer);
  }
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

const client = (apiKey = 'pp-demo-key') => new OpenAI({ apiKey, baseURL, maxRetries: 0, timeout: 30000 });
const messages = [{ role: 'user', content: 'What does a megawatt-hour of wind buy?' }];

test('streams a chat completion chunk by chunk, with usage when asked', async () => {
  const stream = await client().chat.completions.create({
    model: 'llama-3.1-8b', messages, stream: true, max_tokens: 60,
    stream_options: { include_usage: true },
  });
  const arrivals = [];
  let text = '';
  let usage = null;
  const start = Date.now();
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const delta = chunk.choices[0]?.delta?.content;
    if (delta) { text += delta; arrivals.push(Date.now() - start); }
  }
  assert.ok(text.length > 0);
  assert.equal(arrivals.length, 60);
  assert.ok(usage, 'usage chunk present');
  assert.equal(usage.completion_tokens, 60);
  assert.ok(usage.prompt_tokens > 0);
  // Chunks arrive as the engine emits them, not all at the end.
  assert.ok(arrivals[arrivals.length - 1] - arrivals[0] > 20, `spread ${arrivals[0]}..${arrivals.at(-1)} ms`);
});

test('no usage chunk when the client did not ask', async () => {
  const stream = await client().chat.completions.create({
    model: 'llama-3.1-8b', messages, stream: true, max_tokens: 10,
  });
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.ok(!chunk.usage, 'usage must not be sent');
  }
  assert.ok(chunks >= 10);
});

test('non-streaming completion with usage and placement headers', async () => {
  const { data, response } = await client().chat.completions
    .create({ model: 'llama-3.1-8b', messages, max_tokens: 8 }).withResponse();
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.usage.completion_tokens, 8);
  assert.ok(['granbury-tx', 'west-tx-wind', 'eu-sovereign'].includes(response.headers.get('x-powerplane-site')));
  assert.ok(response.headers.get('x-request-id').startsWith('req_'));
  const legacy = await client().completions.create({ model: 'llama-3.1-8b', prompt: 'Once upon', max_tokens: 5 });
  assert.equal(legacy.usage.completion_tokens, 5);
});

test('models list', async () => {
  const models = [];
  for await (const m of client().models.list()) models.push(m.id);
  assert.deepEqual(models, ['llama-3.1-8b']);
});

test('the EU-only key is served in the EU', async () => {
  const { response } = await client('pp-eu-key').chat.completions
    .create({ model: 'llama-3.1-8b', messages, max_tokens: 4 }).withResponse();
  assert.equal(response.headers.get('x-powerplane-site'), 'eu-sovereign');
});

test('errors arrive as OpenAI errors', async () => {
  await assert.rejects(
    client('not-a-key').chat.completions.create({ model: 'llama-3.1-8b', messages }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key');
  await assert.rejects(
    client().chat.completions.create({ model: 'gpt-nothing', messages }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
  await assert.rejects(
    client().chat.completions.create({ model: 'llama-3.1-8b', messages: [] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'messages');
});
