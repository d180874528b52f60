// Helpers shared by the e2e tests: start the powerplane binary on an OS-chosen loopback port with
// its own temporary store, and talk to its admin API.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';

export const BIN = process.env.POWERPLANE_BIN;
export const ADMIN_KEY = 'pp-admin-key';
export const MODEL = 'llama-3.1-8b';
export const messages = [{ role: 'user', content: 'What does a megawatt-hour of wind buy?' }];

// A fresh, empty folder for a tenancy store; the caller removes it (removeDir).
export function tempDir(prefix = 'pp-e2e-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function removeDir(dir) {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}

// Runs `powerplane ARGS` and resolves once it prints its API URL (at most `timeoutMs`).
// Returns { proc, baseURL (…/v1), root (without /v1) }.
export async function startPowerplane(args, timeoutMs = 30000) {
  assert.ok(BIN, 'POWERPLANE_BIN must point at the powerplane binary');
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const baseURL = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`powerplane did not start within ${timeoutMs} ms`));
    }, timeoutMs);
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d.toString();
      const m = out.match(/API:\s+(http:\/\/127\.0\.0\.1:\d+\/v1)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`powerplane exited (${code ?? signal}) before serving`));
    });
  });
  proc.stdout.resume();  // keep draining stdout so the process never blocks on a full pipe.
  return { proc, baseURL, root: baseURL.replace(/\/v1$/, '') };
}

// Stops a process this test started and waits (at most `timeoutMs`) for it to exit.
export async function stopProcess(proc, signal = 'SIGTERM', timeoutMs = 10000) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill(signal);
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

export function openai(baseURL, apiKey = 'pp-demo-key') {
  return new OpenAI({ apiKey, baseURL, maxRetries: 0, timeout: 30000 });
}

// An admin API call; returns { status, headers, text, json } (json: parsed body or null).
export async function admin(root, method, urlPath, body) {
  const res = await fetch(root + urlPath, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30000),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* JSON lines or CSV */ }
  return { status: res.status, headers: res.headers, text, json };
}

// The ledger's rows (JSON lines), optionally one tenant's.
export async function ledger(root, tenant) {
  const r = await admin(root, 'GET', '/admin/ledger' + (tenant ? `?tenant=${tenant}` : ''));
  assert.equal(r.status, 200, r.text);
  return r.text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// `promise`, or a rejection naming `what` after `ms` (the timer does not outlive the promise).
export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
