// End-to-end: stopping `powerplane up` (SIGTERM, as systemd, Kubernetes or Ctrl-C stop it) while
// the official OpenAI client streams through it. The streams under way finish whole and are in
// the ledger; a second signal cuts what is left with an error that says the gateway is stopping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MODEL, messages, tempDir, removeDir, startPowerplane, stopProcess, openai, ledger, sleep,
  withTimeout,
} from './powerplane.mjs';

// Starts `n` streams of `maxTokens` each and resolves once each has its first content, with
// { done: a promise of { text, finish, error } per stream }.
async function streamsUnderWay(baseURL, n, maxTokens) {
  const started = [];
  const done = [];
  for (let i = 0; i < n; i++) {
    let markStarted;
    started.push(new Promise((resolve) => { markStarted = resolve; }));
    done.push((async () => {
      let text = '';
      let finish = null;
      try {
        const stream = await openai(baseURL).chat.completions.create({
          model: MODEL, messages, stream: true, max_tokens: maxTokens,
        });
        for await (const chunk of stream) {
          const c = chunk.choices[0];
          if (c?.delta?.content) { text += c.delta.content; markStarted(); }
          if (c?.finish_reason) finish = c.finish_reason;
        }
        return { text, finish, error: null };
      } catch (e) {
        markStarted();
        return { text, finish, error: e };
      }
    })());
  }
  await withTimeout(Promise.all(started), 20000, 'first tokens of every stream');
  return done;
}

function exitOf(proc) {
  return new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
}

test('SIGTERM lets the streams under way finish, takes no new request, and exits 0', async () => {
  const dir = tempDir('pp-e2e-shutdown-');
  try {
    const args = ['up', '--listen', '127.0.0.1:0', '--engine-speed', '1', '--log-level', 'warn',
                  '--data-dir', dir];
    let gw = await startPowerplane(args);
    const done = await streamsUnderWay(gw.baseURL, 4, 300);
    const exited = exitOf(gw.proc);
    const stopAt = Date.now();
    gw.proc.kill('SIGTERM');
    await sleep(200);
    await assert.rejects(
      openai(gw.baseURL).chat.completions.create({ model: MODEL, messages, max_tokens: 4 }),
      (e) => e.constructor.name === 'APIConnectionError', 'a new request while draining');
    const results = await withTimeout(Promise.all(done), 30000, 'the streams under way');
    for (const r of results) {
      assert.equal(r.error, null, `a stream under way was cut: ${r.error}`);
      assert.equal(r.finish, 'length');
      assert.ok(r.text.length > 0);
    }
    const { code } = await withTimeout(exited, 30000, 'exit after SIGTERM');
    assert.equal(code, 0);
    assert.ok(Date.now() - stopAt < 20000, 'the drain waited for its grace, not for the streams');

    gw = await startPowerplane(args);
    try {
      const rows = await ledger(gw.root);
      assert.equal(rows.length, 4);
      for (const row of rows) {
        assert.equal(row.outcome, 'ok');
        assert.equal(row.completion_tokens, 300);
      }
    } finally {
      await stopProcess(gw.proc);
    }
  } finally {
    removeDir(dir);
  }
});

test('a second signal cuts the streams still under way with an error event', async () => {
  const dir = tempDir('pp-e2e-shutdown2-');
  try {
    const gw = await startPowerplane(['up', '--listen', '127.0.0.1:0', '--engine-speed', '1',
                                      '--log-level', 'warn', '--data-dir', dir]);
    const done = await streamsUnderWay(gw.baseURL, 2, 4000);
    const exited = exitOf(gw.proc);
    gw.proc.kill('SIGTERM');
    await sleep(300);
    const stopAt = Date.now();
    gw.proc.kill('SIGTERM');
    const results = await withTimeout(Promise.all(done), 10000, 'the cut streams');
    for (const r of results) {
      assert.ok(r.error, 'a stream of 4000 tokens at real time ended without an error');
      assert.equal(r.error.constructor.name, 'APIError', `${r.error}`);
      assert.match(String(r.error.message), /shutting down/);
      assert.ok(r.text.length > 0);
    }
    const { code } = await withTimeout(exited, 10000, 'exit after the second signal');
    assert.equal(code, 0);
    assert.ok(Date.now() - stopAt < 5000);
  } finally {
    removeDir(dir);
  }
});
