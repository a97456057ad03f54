// The HTML page of miaudit (GET /) in Debian's headless Chromium, driven by playwright-core, with
// axe-core for accessibility: .ci/e2e, check_page_chromium. Plain node, node:assert.
//
//   MIAUDIT_URL=http://127.0.0.1:9464 node tests/web/page.test.mjs
//
// Environment: MIAUDIT_URL (the running daemon, required); MIAUDIT_API_TOKEN (sent as a bearer token
// to the JSON API, optional); E2E_ARTIFACTS (where the screenshots, the rendered HTML and axe's results
// go; default target/ci-artifacts of the repository); CHROMIUM (default /usr/bin/chromium);
// PAGE_SELFTEST_EXTRA_FINDINGS=N expects N open findings more than the API reports (self-test: the
// test must fail).
//
// Every step runs even after one failed (except when the page does not load); the script prints each
// step's result, then "page.test.mjs: N passed, N failed", and exits 1 when one failed.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const AXE_PATH = require.resolve('axe-core/axe.min.js');
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
const OPEN_STATES = 'suspected,confirmed,acknowledged';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const BASE = (process.env.MIAUDIT_URL || '').replace(/\/+$/, '');
if (!BASE) {
  console.error('page.test.mjs: set MIAUDIT_URL to the running miaudit, e.g. http://127.0.0.1:9464');
  process.exit(2);
}
const ORIGIN = new URL(BASE).origin;
const TOKEN = process.env.MIAUDIT_API_TOKEN || '';
const ARTIFACTS = resolve(process.env.E2E_ARTIFACTS || join(here, '..', '..', 'target', 'ci-artifacts'));
const EXTRA = Number(process.env.PAGE_SELFTEST_EXTRA_FINDINGS || 0);
mkdirSync(ARTIFACTS, { recursive: true });

// --- a tiny runner ------------------------------------------------------------------------------

const results = [];
async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`  ok   ${name} (${Date.now() - t} ms)`);
    return true;
  } catch (e) {
    results.push([name, false]);
    console.log(`  FAIL ${name} (${Date.now() - t} ms)\n${indent(e instanceof assert.AssertionError ? e.message : e.stack || String(e))}`);
    return false;
  }
}
const indent = (s) => String(s).split('\n').map((l) => `       ${l}`).join('\n');
const log = (msg) => console.log(`       ${msg}`);

// --- the JSON API -------------------------------------------------------------------------------

/** Every finding of GET /api/v1/findings?state=STATES, over all pages. */
async function apiFindings(states) {
  const items = [];
  let cursor = null;
  for (let pages = 0; pages < 100; pages++) {
    const q = new URLSearchParams({ state: states, limit: '1000' });
    if (cursor) q.set('cursor', cursor);
    const url = `${BASE}/api/v1/findings?${q}`;
    const r = await fetch(url, {
      headers: { Accept: 'application/json', ...(TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}) },
    });
    const body = await r.text();
    assert.equal(r.status, 200, `GET ${url}: HTTP ${r.status}: ${body.slice(0, 300)}`);
    const doc = JSON.parse(body);
    assert.ok(Array.isArray(doc.items), `GET ${url}: no items array`);
    items.push(...doc.items);
    cursor = doc.next_cursor;
    if (!cursor) return items;
  }
  throw new Error('more than 100 pages of findings');
}

/** Object ids in the rows of the tables of the #findings section, as the page shows them. */
async function pageRows(page) {
  return page.$$eval('#findings table tbody tr', (trs) => trs.map((tr) => tr.textContent));
}

/**
 * Loads `url` and compares its finding rows with the API's findings in `states`. The demo scans
 * meanwhile (a suspected finding becomes confirmed, an identity goes): the API is asked before and
 * after the page, and the comparison counts only when both answers agree (up to 5 tries).
 */
async function compareWithApi(page, url, states) {
  let last = '';
  for (let attempt = 1; attempt <= 5; attempt++) {
    const before = await apiFindings(states);
    await page.goto(url);
    const rows = await pageRows(page);
    const after = await apiFindings(states);
    const key = (fs) => fs.map((f) => `${f.tenant_id}/${f.object_id}/${f.state}`).sort().join(' ');
    if (key(before) !== key(after)) {
      last = `the API's findings changed while the page loaded (${before.length} -> ${after.length})`;
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    const want = after.length + EXTRA;
    if (EXTRA) log(`self-test: expecting ${EXTRA} finding row(s) more than the API reports; this step must fail`);
    assert.equal(rows.length, want,
      `${url}: ${rows.length} finding rows in the tables of #findings, the API has ${after.length} findings in ${states}` +
      (EXTRA ? ` (+${EXTRA}, self-test)` : ''));
    const text = rows.join('\n');
    const missing = after.filter((f) => !text.includes(f.object_id));
    assert.deepEqual(missing.map((f) => `${f.tenant_id}/${f.object_id}`), [],
      `${url}: findings of the API whose object id is not in a row of the page`);
    log(`${rows.length} rows = the API's ${after.length} findings in ${states}, every object id shown`);
    return after;
  }
  throw new Error(`${url}: no stable answer of the API in 5 tries; last: ${last}`);
}

// --- checks inside the page -----------------------------------------------------------------------

async function runAxe(page, name) {
  // The page's CSP (default-src 'none') forbids scripts; the context bypasses it for axe only.
  await page.addScriptTag({ path: AXE_PATH });
  const res = await page.evaluate(async (tags) => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return { violations: r.violations, passes: r.passes.length, incomplete: r.incomplete.length, version: r.testEngine.version };
  }, AXE_TAGS);
  writeFileSync(join(ARTIFACTS, `axe-${name}.json`), JSON.stringify(res, null, 2));
  const lines = res.violations.flatMap((v) => [
    `${v.id} (${v.impact}): ${v.help} [${v.tags.filter((t) => t.startsWith('wcag')).join(', ')}] ${v.helpUrl}`,
    ...v.nodes.map((n) => `    ${n.target.join(' ')}: ${n.html.slice(0, 200)}\n      ${(n.failureSummary || '').replace(/\n/g, '\n      ')}`),
  ]);
  assert.equal(res.violations.length, 0,
    `axe-core ${res.version} (${AXE_TAGS.join(', ')}) finds ${res.violations.length} violation(s) on ${page.url()}:\n${lines.join('\n')}`);
  log(`axe-core ${res.version}: no violation (${res.passes} rules pass, ${res.incomplete} need review) on ${page.url()}`);
}

/** The focused element; `again` when it was already focused during the Tab walk `walk`. */
async function focused(page, walk = '') {
  return page.evaluate((walk) => {
    const e = document.activeElement;
    if (!e || e === document.body) return { tag: 'body', desc: 'body', again: false };
    const again = walk !== '' && e.__tabWalk === walk;
    if (walk) e.__tabWalk = walk;
    const text = e.tagName === 'SELECT' ? `value=${e.value}` : (e.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 40);
    return {
      tag: e.tagName.toLowerCase(), id: e.id, type: e.type || '', text, again,
      href: e.getAttribute('href') || '',
      desc: `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${text ? ` "${text}"` : ''}`,
    };
  }, walk);
}

/** Presses Tab until `pred(focused element)` holds; fails once the focus comes round to an element again. */
let walks = 0;
async function tabTo(page, what, pred, max = 500) {
  const walk = `w${++walks}`;
  const seen = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    const f = await focused(page, walk);
    seen.push(f.desc);
    if (pred(f)) {
      log(`${what}: ${i + 1} Tab press(es): ${seen.join(' -> ')}`);
      return f;
    }
    if (f.again) break;
  }
  assert.fail(`${what}: not focused by Tab (the focus went round: ${seen.join(' -> ')})`);
}

/** A network request to another origin than the daemon's (data: and blob: URLs are not requests). */
function isForeign(url) {
  const u = new URL(url);
  return !['data:', 'blob:', 'about:'].includes(u.protocol) && u.origin !== ORIGIN;
}

// --- the test ------------------------------------------------------------------------------------

const requests = [];
const started = Date.now();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: CHROMIUM_ARGS,
  timeout: 60_000,
});
console.log(`page.test.mjs: ${BASE}/ in Chromium ${browser.version()} (playwright-core), artifacts in ${ARTIFACTS}`);
try {
  const context = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 }, javaScriptEnabled: true });
  // Every request is recorded; one to another origin is refused here (it never leaves the machine)
  // and fails the test below.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    return isForeign(url) ? route.abort('blockedbyclient') : route.continue();
  });
  context.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  let response;
  let html = '';

  const loaded = await step('GET / answers 200 text/html', async () => {
    response = await page.goto(`${BASE}/`);
    assert.ok(response, 'no response');
    assert.equal(response.status(), 200, `GET /: HTTP ${response.status()}`);
    assert.match(response.headers()['content-type'] || '', /^text\/html\b/i, 'content-type');
    html = await response.text();
    writeFileSync(join(ARTIFACTS, 'page.html'), await page.content());
    log(`content-type ${response.headers()['content-type']}, ${html.length} bytes`);
  });
  if (!loaded) throw new Error('the page did not load; nothing else to check');

  await step('a Content-Security-Policy header', async () => {
    const h = response.headers();
    assert.ok(h['content-security-policy'], `no Content-Security-Policy header (headers: ${JSON.stringify(h)})`);
    log(`CSP ${h['content-security-policy']}`);
  });

  await step('title and one h1', async () => {
    const title = await page.title();
    assert.match(title, /miaudit/i, `title ${JSON.stringify(title)}`);
    const h1 = await page.$$eval('h1', (hs) => hs.map((h) => h.textContent.trim()));
    assert.equal(h1.length, 1, `h1 elements: ${JSON.stringify(h1)}`);
    assert.ok(h1[0], 'the h1 is empty');
    log(`title ${JSON.stringify(title)}, h1 ${JSON.stringify(h1[0])}`);
  });

  await step('no script: no <script>, no on* handler, no javascript: URL', async () => {
    assert.doesNotMatch(html, /<script\b/i, 'the served HTML has a <script>');
    const found = await page.evaluate(() => {
      const out = [];
      for (const e of document.querySelectorAll('*')) {
        if (e.tagName === 'SCRIPT') out.push(`<script> ${e.outerHTML.slice(0, 120)}`);
        for (const a of e.attributes) {
          if (/^on/i.test(a.name)) out.push(`${e.tagName.toLowerCase()} ${a.name}="${a.value.slice(0, 60)}"`);
          if (/^\s*javascript:/i.test(a.value)) out.push(`${e.tagName.toLowerCase()} ${a.name}="${a.value.slice(0, 60)}"`);
        }
      }
      return out;
    });
    assert.deepEqual(found, [], 'script in the page');
  });

  await step('every <select> and <input> has a label', async () => {
    const controls = await page.$$eval('select, input:not([type=hidden]), textarea', (es) =>
      es.map((e) => ({
        desc: `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.name ? `[name=${e.name}]` : ''}`,
        labels: [...(e.labels || [])].map((l) => l.textContent.trim()).filter(Boolean),
      })));
    assert.ok(controls.length > 0, 'no form control on the page');
    const unlabelled = controls.filter((c) => c.labels.length === 0).map((c) => c.desc);
    assert.deepEqual(unlabelled, [], 'form controls without a <label> (with text)');
    log(controls.map((c) => `${c.desc}: "${c.labels.join('; ')}"`).join(', '));
  });

  await step('the filters and the skip link are there', async () => {
    const skip = await page.$$eval('a[href="#findings"]', (as) => as.map((a) => a.textContent.trim()));
    assert.ok(skip.includes('Skip to the findings'), `skip links: ${JSON.stringify(skip)}`);
    assert.equal(await page.locator('#findings').count(), 1, 'no element #findings');
    for (const [name, label] of [['tenant_id', 'Tenant'], ['state', 'State'], ['identity_type', 'Identity type']]) {
      const names = await page.getByLabel(label, { exact: true }).evaluateAll((es) => es.map((e) => `${e.tagName.toLowerCase()}[name=${e.name}]`));
      assert.deepEqual(names, [`select[name=${name}]`], `the control labelled ${JSON.stringify(label)}`);
    }
    assert.equal(await page.locator('input[type=checkbox][name=awaiting_ticket]').count(), 1, 'awaiting-ticket checkbox');
    const exports = await page.$$eval('a[href^="/api/v1/export"]', (as) => as.map((a) => a.getAttribute('href')));
    assert.ok(exports.length >= 2, `export links: ${JSON.stringify(exports)}`);
    const tables = await page.$$eval('table', (ts) => ts.map((t) => (t.caption ? t.caption.textContent.trim() : '')));
    assert.ok(tables.length >= 1 && tables.every(Boolean), `table captions: ${JSON.stringify(tables)}`);
    log(`${tables.length} tables, each with a caption; export links ${exports.join(' ')}`);
  });

  await step('full-page screenshot and rendered HTML saved', async () => {
    await page.screenshot({ path: join(ARTIFACTS, 'page.png'), fullPage: true });
    log(`${join(ARTIFACTS, 'page.png')}, ${join(ARTIFACTS, 'page.html')}`);
  });

  await step('axe-core: no WCAG 2.1 A/AA violation on /', () => runAxe(page, 'page'));

  await step(`finding rows = GET /api/v1/findings?state=${OPEN_STATES}`, () =>
    compareWithApi(page, `${BASE}/`, OPEN_STATES));

  await step('keyboard: skip link, then State = confirmed and "Apply filters" by keyboard', async () => {
    await page.goto(`${BASE}/`);
    await page.keyboard.press('Tab');
    const first = await focused(page);
    assert.ok(first.tag === 'a' && first.href === '#findings' && /Skip to the findings/.test(first.text),
      `the first Tab focuses ${first.desc}, not the skip link`);
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => location.hash === '#findings', null, { timeout: 5000 });
    const target = await focused(page);
    assert.equal(target.id, 'findings', `after Enter on the skip link the focus is on ${target.desc}`);
    log('Tab -> skip link, Enter -> #findings focused');

    await tabTo(page, 'the State select', (f) => f.tag === 'select' && f.id === 'f-state');
    // ArrowDown on a focused, closed <select> moves to the next option (Chromium on Linux).
    const options = await page.$$eval('#f-state option', (os) => os.map((o) => o.value));
    let value = await page.$eval('#f-state', (s) => s.value);
    const path = [value];
    for (let i = 0; i < options.length && value !== 'confirmed'; i++) {
      await page.keyboard.press('ArrowDown');
      value = await page.$eval('#f-state', (s) => s.value);
      path.push(value);
    }
    log(`State select by ArrowDown: ${path.map((v) => JSON.stringify(v)).join(' -> ')}`);
    assert.equal(value, 'confirmed', 'the State select by keyboard');
    await tabTo(page, 'the "Apply filters" button', (f) => f.tag === 'button' && f.text === 'Apply filters', 10);
    await Promise.all([page.waitForURL((u) => u.searchParams.has('state')), page.keyboard.press('Enter')]);
    const url = new URL(page.url());
    assert.equal(url.searchParams.get('state'), 'confirmed', `URL after submitting: ${page.url()}`);
    const heading = (await page.textContent('#findings-h') || '').trim();
    assert.match(heading, /confirmed/i, `the findings heading after filtering: ${JSON.stringify(heading)}`);
    assert.doesNotMatch(heading, /open/i, `the findings heading after filtering: ${JSON.stringify(heading)}`);
    assert.equal(await page.$eval('#f-state', (s) => s.value), 'confirmed', 'the State select keeps the filter');
    log(`submitted by Enter: ${url.pathname}${url.search}, heading ${JSON.stringify(heading)}`);
    await page.screenshot({ path: join(ARTIFACTS, 'page-confirmed.png'), fullPage: true });
  });

  await step('filtered page: rows = GET /api/v1/findings?state=confirmed', () =>
    compareWithApi(page, `${BASE}/?state=confirmed`, 'confirmed'));

  await step('axe-core: no WCAG 2.1 A/AA violation on /?state=confirmed', async () => {
    if (page.url() !== `${BASE}/?state=confirmed`) await page.goto(`${BASE}/?state=confirmed`);
    await runAxe(page, 'page-confirmed');
  });

  await step(`every request went to ${ORIGIN}`, async () => {
    const foreign = [...new Set(requests.filter((r) => isForeign(r.slice(r.indexOf(' ') + 1))))];
    assert.deepEqual(foreign, [], `requests to other origins than ${ORIGIN} (refused)`);
    log(`${requests.length} requests, all to ${ORIGIN}`);
  });
} catch (e) {
  results.push(['(aborted)', false]);
  console.log(`  FAIL ${e.message}`);
} finally {
  await browser.close();
}

const failed = results.filter(([, ok]) => !ok).length;
console.log(`page.test.mjs: ${results.length - failed} passed, ${failed} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
process.exit(failed ? 1 : 0);
