// End-to-end test of the built-in demo chat page (public/) in headless
// Chromium against the real streamgate binary.
//
// Starts the server on a free loopback port with a temporary config (embedded
// mode, demo upstream at 100 words/s), opens the page, asks a question and
// checks what the page shows against a second raw WebSocket client on the
// same session; then reloads and checks the history. Exit code 0 when every
// check passed, 1 otherwise. Whole run bounded by RUN_TIMEOUT_MS.
//
//   npm ci --prefix tests/e2e && node tests/e2e/demo_page.test.mjs
//
// Environment: SG_BINARY (default <repo>/build/streamgate), CHROMIUM_PATH
// (default /usr/bin/chromium), E2E_SCREENSHOT (default
// /tmp/streamgate-e2e.png, written on failure).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)),
                          '..', '..');
const BINARY = process.env.SG_BINARY
    ? path.resolve(process.env.SG_BINARY)
    : path.join(REPO, 'build', 'streamgate');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCREENSHOT = process.env.E2E_SCREENSHOT || '/tmp/streamgate-e2e.png';
const RUN_TIMEOUT_MS = 55000;
const STEP_TIMEOUT_MS = 10000;
const ANSWER_TIMEOUT_MS = 20000;
const QUESTION = 'Hello streamgate — how does streaming work? ✓';
const CHROMIUM_ARGS = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-dev-shm-usage',
];

/* ---- reporting ---------------------------------------------------- */

let passed = 0;
let failed = 0;

class CheckFailed extends Error {}

function check(cond, what, detail) {
    if (cond) {
        passed++;
        console.log(`ok - ${what}`);
        return;
    }
    failed++;
    const extra = detail === undefined ? '' : `\n     got: ${detail}`;
    console.log(`not ok - ${what}${extra}`);
    throw new CheckFailed(what);
}

function show(v) {
    return JSON.stringify(v)?.slice(0, 400);
}

/* ---- helpers ------------------------------------------------------ */

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/* Resolves when `pred()` returns a truthy value; rejects after `ms`. */
async function waitFor(pred, ms, what) {
    const end = Date.now() + ms;
    for (;;) {
        const v = await pred();
        if (v) return v;
        if (Date.now() > end) {
            throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        }
        await sleep(50);
    }
}

function luaString(s) {
    return JSON.stringify(s);   // "..." with \" and \\ escapes: valid Lua
}

/* ---- the server --------------------------------------------------- */

function writeConfig(dir, port) {
    const file = path.join(dir, 'streamgate-e2e.lua');
    fs.writeFileSync(file, `return {
    port = ${port},
    listen = "127.0.0.1",
    lua = { path = ${luaString(path.join(REPO, 'lua'))} },
    http = { static_dir = ${luaString(path.join(REPO, 'public'))} },
    demo = { words_per_second = 100 },
}
`);
    return file;
}

function startServer(configFile) {
    const env = { ...process.env };
    for (const k of ['PORT', 'REDIS_URL', 'REDIS_HOST', 'REDIS_PORT',
                     'REDIS_PASSWORD', 'STREAMGATE_ENV', 'NODE_ID']) {
        delete env[k];
    }
    const child = spawn(BINARY, ['-c', configFile], {
        cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'],
    });
    const srv = { child, log: '', exited: null };
    const keep = (d) => { srv.log = (srv.log + d).slice(-8000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (e) => { srv.exited = `spawn error: ${e.message}`; });
    child.on('exit', (code, sig) => {
        srv.exited = `exit code ${code}, signal ${sig}`;
    });
    return srv;
}

async function waitHealthy(srv, base) {
    await waitFor(async () => {
        if (srv.exited) {
            throw new Error(`server stopped before /healthz: ${srv.exited}`);
        }
        try {
            const res = await fetch(`${base}/healthz`,
                                    { signal: AbortSignal.timeout(1000) });
            return res.status === 200;
        } catch {
            return false;
        }
    }, STEP_TIMEOUT_MS, `${base}/healthz to answer 200`);
}

async function stopServer(srv) {
    if (!srv || srv.exited) return;
    const gone = new Promise((r) => srv.child.once('exit', r));
    process.kill(srv.child.pid, 'SIGTERM');
    const t = setTimeout(() => {
        if (!srv.exited) process.kill(srv.child.pid, 'SIGKILL');
    }, 3000);
    await gone;
    clearTimeout(t);
}

/* ---- the raw observer client -------------------------------------- */

/* Connects a plain WebSocket client to the session and records frames. */
function observe(base, sid) {
    const url = `${base.replace('http', 'ws')}/ws/chat?session_id=` +
        `${encodeURIComponent(sid)}&user_id=e2e_observer&token=dev-token`;
    const ws = new WebSocket(url);
    const obs = { ws, frames: [], closed: null, error: null };
    ws.on('message', (data, isBinary) => {
        const text = data.toString('utf8');
        let f = null;
        try { f = JSON.parse(text); } catch { f = { raw: text, isBinary }; }
        obs.frames.push(f);
    });
    ws.on('close', (code) => { obs.closed = code; });
    ws.on('error', (e) => { obs.error = e.message; });
    return obs;
}

function messagesFor(obs, id) {
    return obs.frames.filter((f) => f.type === 'message' && f.data &&
                                    f.data.message_id === id)
                     .map((f) => f.data);
}

/* ---- page helpers ------------------------------------------------- */

function bubbles(page, role) {
    return page.$$eval(`#messages .msg[data-role="${role}"]`, (els) =>
        els.map((e) => ({
            id: e.dataset.messageId,
            complete: e.dataset.complete,
            pending: e.dataset.pending || null,
            text: e.querySelector('.msg-text').textContent,
        })));
}

/* Records every change of assistant bubbles (id, text length, complete) in
 * window.__e2eTrace, one entry per DOM mutation batch. */
function traceAssistant(page) {
    return page.evaluate(() => {
        window.__e2eTrace = [];
        const root = document.getElementById('messages');
        const sel = '.msg[data-role=assistant]';
        const snap = () => {
            for (const e of root.querySelectorAll(sel)) {
                window.__e2eTrace.push({
                    id: e.dataset.messageId,
                    len: e.querySelector('.msg-text').textContent.length,
                    complete: e.dataset.complete,
                });
            }
        };
        new MutationObserver(snap).observe(root, {
            subtree: true, childList: true, characterData: true,
            attributes: true, attributeFilter: ['data-complete'],
        });
    });
}

/* ---- the test ----------------------------------------------------- */

async function run(ctx) {
    check(fs.existsSync(BINARY), `server binary exists at ${BINARY}`);
    check(fs.existsSync(CHROMIUM), `chromium exists at ${CHROMIUM}`);

    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    ctx.srv = startServer(writeConfig(ctx.tmp, port));
    await waitHealthy(ctx.srv, base);
    check(true, `server answers /healthz on port ${port}`);

    ctx.browser = await chromium.launchPersistentContext(
        path.join(ctx.tmp, 'profile'),
        { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    ctx.browser.setDefaultTimeout(STEP_TIMEOUT_MS);
    const page = ctx.page = ctx.browser.pages()[0] ||
        await ctx.browser.newPage();
    page.on('pageerror', (e) => ctx.pageErrors.push(e.message));

    const res = await page.goto(`${base}/`);
    check(res && res.status() === 200, 'GET / answers 200',
          res && res.status());
    await page.waitForSelector('#status[data-state="open"]');
    check(true, 'page WebSocket connected');

    const sid = await page.evaluate(() =>
        localStorage.getItem('chatSessionId'));
    check(/^session_\d+$/.test(sid || ''),
          'session id stored in localStorage as session_<ms>', sid);
    check(await page.textContent('#session-id') === sid,
          'page shows the session id');

    ctx.obs = observe(base, sid);
    await waitFor(() => ctx.obs.frames.length > 0 || ctx.obs.error ||
                        ctx.obs.closed !== null,
                  STEP_TIMEOUT_MS, 'the observer welcome frame');
    const welcome = ctx.obs.frames[0];
    check(welcome && welcome.type === 'welcome' && welcome.sessionId === sid,
          'observer client gets welcome with the session id first',
          show(welcome ?? ctx.obs.error ?? ctx.obs.closed));

    await traceAssistant(page);
    await page.fill('#question', QUESTION);
    await page.click('#send');

    await page.waitForSelector(
        '#messages .msg[data-role="assistant"][data-complete="true"]',
        { timeout: ANSWER_TIMEOUT_MS });
    check(true, 'an assistant answer completed on the page');
    await page.waitForSelector('#messages .msg[data-role="user"]' +
                               ':not([data-pending])');

    const users = await bubbles(page, 'user');
    check(users.length === 1 && users[0].text === QUESTION,
          'exactly one user bubble, holding the question', show(users));
    check(!users[0].id.startsWith('temp_'),
          'user bubble re-keyed to the message_id from POST /api/chat',
          users[0].id);

    const answers = await bubbles(page, 'assistant');
    check(answers.length === 1, 'exactly one assistant bubble',
          show(answers));
    const answer = answers[0];
    check(answer.text.trim().length > 0, 'answer text is not empty',
          show(answer));

    const trace = (await page.evaluate(() => window.__e2eTrace))
        .filter((t) => t.id === answer.id);
    const streamingLens = trace.filter((t) => t.complete === 'false')
                               .map((t) => t.len);
    check(new Set(streamingLens).size >= 2,
          'answer grew while streaming (>= 2 distinct partial lengths)',
          show(streamingLens));
    const lens = trace.map((t) => t.len);
    check(lens.every((l, i) => i === 0 || l >= lens[i - 1]),
          'answer text never shrank', show(lens));
    const firstDone = trace.findIndex((t) => t.complete === 'true');
    check(trace.slice(firstDone).every((t) => t.complete === 'true'),
          'answer never went back to streaming after completing',
          show(trace.slice(firstDone)));
    check(await page.isDisabled('#cancel'),
          'cancel button disabled once the answer completed');

    await waitFor(() => messagesFor(ctx.obs, answer.id)
                        .some((m) => m.is_complete === true),
                  STEP_TIMEOUT_MS, 'the observer to see the final');
    const seen = messagesFor(ctx.obs, answer.id);
    const finals = seen.filter((m) => m.is_complete === true);
    check(finals.length === 1, 'observer got exactly one final',
          finals.length);
    check(seen[seen.length - 1].is_complete === true,
          'observer got nothing after the final', show(seen.at(-1)));
    check(seen.every((m, i) => i === 0 ||
                     m.content.startsWith(seen[i - 1].content)),
          'observer content grew monotonically (each a prefix of the next)',
          show(seen.map((m) => m.content.length)));
    check(finals[0].content === answer.text,
          'page answer equals the observer final content',
          show({ page: answer.text, observer: finals[0].content }));
    check(finals[0].role === 'assistant' &&
          finals[0].session_id === sid,
          'final carries role assistant and the session id',
          show(finals[0]));
    const userFrames = ctx.obs.frames.filter((f) => f.type === 'message' &&
                                             f.data?.role === 'user');
    check(userFrames.length === 0,
          'live user messages are not forwarded to sockets',
          show(userFrames));

    check(await page.isHidden('#error'), 'no error shown on the page',
          await page.textContent('#error-text'));

    await page.reload();
    await page.waitForSelector('#status[data-state="open"]');
    await page.waitForSelector('#messages[data-history="true"]');
    check(await page.evaluate(() => localStorage.getItem('chatSessionId'))
          === sid, 'session id kept across reload');
    const users2 = await bubbles(page, 'user');
    const answers2 = await bubbles(page, 'assistant');
    check(users2.length === 1 && users2[0].text === QUESTION,
          'after reload: question shown once from history', show(users2));
    check(answers2.length === 1 && answers2[0].text === answer.text &&
          answers2[0].complete === 'true',
          'after reload: full answer shown once, complete', show(answers2));
    check(answers2[0].id === answer.id,
          'after reload: answer keeps its message_id', answers2[0].id);
    check(ctx.pageErrors.length === 0, 'no JavaScript errors on the page',
          show(ctx.pageErrors));
    check(!ctx.srv.exited, 'server still running at the end',
          ctx.srv.exited);
}

async function screenshot(ctx) {
    if (!ctx.page) return;
    try {
        await ctx.page.screenshot({ path: SCREENSHOT, fullPage: true,
                                    timeout: 5000 });
        console.log(`# screenshot: ${SCREENSHOT}`);
    } catch (e) {
        console.log(`# screenshot failed: ${e.message}`);
    }
}

async function cleanup(ctx) {
    try { ctx.obs?.ws.terminate(); } catch { /* already closed */ }
    try { await ctx.browser?.close(); } catch { /* already closed */ }
    try { await stopServer(ctx.srv); } catch { /* already gone */ }
    fs.rmSync(ctx.tmp, { recursive: true, force: true });
}

async function main() {
    const ctx = {
        tmp: fs.mkdtempSync(path.join(os.tmpdir(), 'streamgate-e2e-')),
        srv: null, browser: null, page: null, obs: null, pageErrors: [],
    };
    const watchdog = setTimeout(() => {
        console.log(`not ok - whole run exceeded ${RUN_TIMEOUT_MS} ms`);
        if (ctx.srv && !ctx.srv.exited) {
            process.kill(ctx.srv.child.pid, 'SIGKILL');
        }
        process.exit(1);
    }, RUN_TIMEOUT_MS);

    let error = null;
    try {
        await run(ctx);
    } catch (e) {
        error = e;
        if (!(e instanceof CheckFailed)) {
            failed++;
            console.log(`not ok - ${e.message}`);
        }
    }
    if (error) {
        await screenshot(ctx);
        if (ctx.srv) {
            console.log('# server output (tail):');
            console.log(ctx.srv.log.replace(/^/gm, '#   '));
        }
    }
    await cleanup(ctx);
    clearTimeout(watchdog);
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
}

main();
