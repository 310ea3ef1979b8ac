// trustpool dashboard. Every value shown comes from the /v1 API and is put
// into the page as text (textContent, text nodes), never parsed as markup.
'use strict';

(function () {
  const TOKEN_KEY = 'trustpool.token';
  const POLL_MS = 2000;
  const LEVELS = ['trusted', 'untrusted', 'unknown'];

  const $ = (id) => document.getElementById(id);

  // el builds an element; children are nodes or strings (appended as text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function table(id, headers, rows) {
    return el('table', id ? { id } : {},
      el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', {}, h)))),
      el('tbody', {}, ...rows));
  }

  function badge(level) {
    const l = LEVELS.includes(level) ? level : 'unknown';
    return el('span', { class: 'badge lvl-' + l, 'data-level': l }, l);
  }

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  async function call(method, path, body) {
    const init = { method, cache: 'no-store', headers: { Authorization: 'Bearer ' + token() } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = body;
    }
    const r = await fetch(path, init);
    if (!r.ok) {
      let msg = r.statusText;
      try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
      throw new APIError(r.status, r.status + ': ' + msg);
    }
    if (r.status === 204) return null;
    return r.json();
  }

  const get = (path) => call('GET', path);

  // ---- sign-in ----

  function showSignin(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $('signin-view').hidden = false;
    $('nav').hidden = true;
    $('view').replaceChildren();
    $('error').hidden = true;
    $('signin-error').textContent = message || '';
  }

  async function signin(ev) {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
    $('token').value = '';
    try {
      await get('/v1/hosts');
    } catch (e) {
      showSignin(e.message);
      return;
    }
    $('signin-error').textContent = '';
    $('signin-view').hidden = true;
    $('nav').hidden = false;
    if (!location.hash || location.hash === '#') location.hash = '#/pool';
    else route();
  }

  // ---- views ----
  // A view is {render(container), refresh()}: render draws the parts that
  // keep their state (inputs), refresh re-reads the API and redraws data.

  let current = null;
  let timer = null;

  function fail(e) {
    if (e instanceof APIError && e.status === 401) {
      showSignin(e.message);
      return;
    }
    $('error').textContent = e.message;
    $('error').hidden = false;
  }

  async function tick() {
    clearTimeout(timer);
    const v = current;
    if (!v || !token()) return;
    try {
      await v.refresh();
      if (v !== current) return;
      $('error').hidden = true;
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    } catch (e) {
      if (v !== current) return;
      fail(e);
    }
    if (v === current && token()) timer = setTimeout(tick, POLL_MS);
  }

  function route() {
    if (!token()) { showSignin(''); return; }
    $('signin-view').hidden = true;
    $('nav').hidden = false;
    const h = location.hash.replace(/^#\/?/, '');
    const [name, ...rest] = h.split('/');
    const arg = decodeURIComponent(rest.join('/'));
    if (name === 'host' && arg) current = hostView(arg);
    else if (name === 'known-good') current = knownGoodView();
    else if (name === 'audit') current = auditView();
    else current = poolView();
    $('error').hidden = true;
    const c = $('view');
    c.replaceChildren();
    current.render(c);
    tick();
  }

  // The pool: counts by level and by policy, hosts with search and filter.
  function poolView() {
    const counts = el('div', { id: 'counts', class: 'cards' });
    const byPolicy = el('div', { id: 'by-policy' });
    const search = el('input', { id: 'search', type: 'search', placeholder: 'search hosts', autocomplete: 'off' });
    const filter = el('select', { id: 'level-filter' },
      el('option', { value: '' }, 'all levels'), ...LEVELS.map((l) => el('option', { value: l }, l)));
    const list = el('div', { id: 'host-list' });
    let hosts = [];

    function draw() {
      const q = search.value.trim().toLowerCase();
      const lv = filter.value;
      const rows = hosts.filter((h) => (!q || h.name.includes(q)) && (!lv || level(h) === lv)).map((h) => {
        const v = h.verdict || {};
        const first = (v.reasons || [])[0];
        return el('tr', { class: 'row-' + level(h), 'data-host': h.name },
          el('td', {}, el('a', { href: '#/host/' + encodeURIComponent(h.name) }, h.name)),
          el('td', {}, badge(level(h))),
          el('td', {}, v.policy || ''),
          el('td', {}, v.vtime || ''),
          el('td', {}, first ? first.code + ': ' + first.message : ''));
      });
      list.replaceChildren(table('hosts', ['host', 'level', 'policy', 'verdict time', 'first reason'], rows),
        el('p', { class: 'muted' }, rows.length + ' of ' + hosts.length + ' hosts shown'));
    }
    search.addEventListener('input', draw);
    filter.addEventListener('change', draw);

    return {
      render(c) {
        c.append(el('h2', {}, 'Pool'), counts, byPolicy, el('h3', {}, 'Hosts'),
          el('div', { class: 'controls' }, search, filter), list);
      },
      async refresh() {
        hosts = await get('/v1/hosts');
        const n = { trusted: 0, untrusted: 0, unknown: 0 };
        const pol = new Map();
        let expired = 0;
        for (const h of hosts) {
          const l = level(h);
          n[l]++;
          const p = (h.verdict && h.verdict.policy) || '(none)';
          if (!pol.has(p)) pol.set(p, { trusted: 0, untrusted: 0, unknown: 0 });
          pol.get(p)[l]++;
          if (((h.verdict && h.verdict.reasons) || []).some((r) => r.code === 'verdict-expired')) expired++;
        }
        counts.replaceChildren(...LEVELS.map((l) =>
          el('div', { class: 'card lvl-' + l, id: 'count-' + l }, el('div', { class: 'num' }, n[l]), l)),
        el('div', { class: 'card', id: 'count-expired' }, el('div', { class: 'num' }, expired), 'expired'));
        byPolicy.replaceChildren(table('policies-count', ['policy', ...LEVELS],
          [...pol.entries()].sort().map(([p, c]) => el('tr', {}, el('td', {}, p), ...LEVELS.map((l) => el('td', {}, c[l]))))));
        draw();
      },
    };
  }

  function level(h) { return (h.verdict && h.verdict.trust_lvl) || 'unknown'; }

  // A pcr-mismatch reason's message says (package policy): "PCR N (bank) is
  // GOT; the approved CLASS references allow VALUES[; first difference]".
  const MISMATCH = /^PCR (\d+) \(([^)]+)\) is ([0-9a-f]+); the approved (\S+) references allow (.*?)(?:; (.*))?$/;

  function diffRows(reasons) {
    return reasons.filter((r) => r.code === 'pcr-mismatch').map((r) => {
      const m = MISMATCH.exec(r.message);
      if (!m) {
        return el('tr', { 'data-pcr': r.pcr }, el('td', {}, r.pcr), el('td', {}, r.bank || ''),
          el('td', {}, ''), el('td', { colspan: '3' }, r.message));
      }
      return el('tr', { 'data-pcr': m[1] },
        el('td', {}, m[1]), el('td', {}, m[2]), el('td', {}, m[4]),
        el('td', { class: 'hex got' }, m[3]),
        el('td', { class: 'hex' }, m[5].split(' or ').map((s) => el('div', {}, s))),
        el('td', {}, m[6] || ''));
    });
  }

  // A host: verdict, reasons, the PCR diff, the history and the evidence.
  function hostView(name) {
    const head = el('div', { id: 'host-head' });
    const reasons = el('div', { id: 'reasons' });
    const diff = el('div', { id: 'diff' });
    const timeline = el('div', { id: 'timeline' });
    const dl = el('button', { type: 'button', id: 'evidence' }, 'Download the latest evidence bundle (JSON)');
    const dlMsg = el('span', { class: 'muted' });
    dl.addEventListener('click', async () => {
      try {
        const ev = await get('/v1/hosts/' + encodeURIComponent(name) + '/evidence');
        const url = URL.createObjectURL(new Blob([JSON.stringify(ev, null, 2)], { type: 'application/json' }));
        const a = el('a', { href: url, download: name + '-evidence.json' });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
        dlMsg.textContent = '';
      } catch (e) {
        dlMsg.textContent = e.message;
      }
    });
    return {
      render(c) {
        c.append(el('p', {}, el('a', { href: '#/pool' }, '← pool')), el('h2', {}, name), head,
          el('h3', {}, 'Reasons'), reasons, el('h3', {}, 'Difference from the approved references'), diff,
          el('h3', {}, 'History'), timeline, el('h3', {}, 'Evidence'), el('p', {}, dl, ' ', dlMsg));
      },
      async refresh() {
        const h = await get('/v1/hosts/' + encodeURIComponent(name));
        const v = h.verdict || { trust_lvl: 'unknown', reasons: [] };
        const lvl = LEVELS.includes(v.trust_lvl) ? v.trust_lvl : 'unknown';
        head.replaceChildren(el('p', { id: 'host-level', class: 'big lvl-' + lvl, 'data-level': lvl }, lvl),
          el('dl', {},
            el('dt', {}, 'verdict time'), el('dd', {}, v.vtime || '—'),
            el('dt', {}, 'expires'), el('dd', {}, v.expiry || '—'),
            el('dt', {}, 'policy'), el('dd', {}, v.policy || '—'),
            el('dt', {}, 'state'), el('dd', {}, h.state || ''),
            el('dt', {}, 'agent'), el('dd', {}, h.url || '')));
        const rs = v.reasons || [];
        reasons.replaceChildren(rs.length === 0 ? el('p', { class: 'muted' }, 'none') :
          table('reason-table', ['code', 'PCR', 'bank', 'message'], rs.map((r) => el('tr', {},
            el('td', {}, r.code), el('td', {}, r.pcr ?? ''), el('td', {}, r.bank || ''), el('td', {}, r.message)))));
        const rows = diffRows(rs);
        diff.replaceChildren(rows.length === 0 ?
          el('p', { class: 'muted' }, lvl === 'untrusted' ? 'no PCR value differs (see the reasons)' : 'no PCR value differs') :
          table('pcr-diff', ['PCR', 'bank', 'class', 'got', 'approved values', 'first differing event'], rows));
        const hist = (h.history || []).slice().sort((a, b) => (a.vtime < b.vtime ? -1 : a.vtime > b.vtime ? 1 : 0));
        timeline.replaceChildren(hist.length === 0 ? el('p', { class: 'muted' }, 'no history') :
          el('ol', { class: 'timeline' }, ...hist.map((e) => el('li', { class: 'lvl-' + e.trust_lvl, 'data-level': e.trust_lvl },
            el('span', { class: 'when' }, e.vtime), ' ', badge(e.trust_lvl),
            (e.reasons && e.reasons.length) ? el('span', { class: 'muted' }, ' ' + e.reasons[0].code) : null))));
      },
    };
  }

  // References, policies and the preview of a change document.
  function knownGoodView() {
    const refs = el('div', { id: 'references' });
    const pols = el('div', { id: 'policies' });
    const doc = el('textarea', { id: 'change-doc', rows: '10', spellcheck: 'false',
      placeholder: '{"retire": ["reference-name"]}' });
    const btn = el('button', { type: 'button', id: 'preview' }, 'Preview');
    const out = el('div', { id: 'preview-result' });
    btn.addEventListener('click', async () => {
      out.replaceChildren(el('p', { class: 'muted' }, 'previewing…'));
      try {
        const r = await call('POST', '/v1/preview', doc.value);
        const ch = r.changes || [];
        out.replaceChildren(el('p', { id: 'preview-summary' }, ch.length === 0 ? 'No host would change level.' :
          ch.length + (ch.length === 1 ? ' host would' : ' hosts would') + ' change level:'),
        ch.length === 0 ? '' : table('preview-table', ['host', 'from', 'to', 'policy', 'reason'], ch.map((c) => el('tr', { 'data-host': c.host },
          el('td', {}, c.host), el('td', {}, badge(c.from)), el('td', {}, badge(c.to)), el('td', {}, c.policy || ''),
          el('td', {}, (c.reasons || []).map((r) => r.code + ': ' + r.message).join('; '))))));
      } catch (e) {
        if (e instanceof APIError && e.status === 401) { fail(e); return; }
        out.replaceChildren(el('p', { class: 'error', id: 'preview-error' }, e.message));
      }
    });
    return {
      render(c) {
        c.append(el('h2', {}, 'References'), refs, el('h2', {}, 'Policies'), pols,
          el('h2', {}, 'Preview a change'),
          el('p', { class: 'muted' }, 'A change document as POST /v1/apply takes it ({"references": […], "policies": […], "retire": […]}). Preview applies nothing.'),
          doc, el('p', {}, btn), out);
      },
      async refresh() {
        const [rs, ps] = await Promise.all([get('/v1/references'), get('/v1/policies')]);
        refs.replaceChildren(table('reference-table', ['name', 'version', 'class', 'PCRs', 'meta'], rs.map((r) => el('tr', { 'data-ref': r.name },
          el('td', {}, r.name), el('td', {}, r.version), el('td', {}, r.class),
          el('td', {}, (r.expect || []).map((e) => e.pcr + ' (' + e.bank + ')').join(', ')),
          el('td', {}, Object.entries(r.meta || {}).map(([k, v]) => k + '=' + v).join(' '))))));
        pols.replaceChildren(table('policy-table', ['name', 'version', 'requires', 'approved', 'selector'], ps.map((p) => el('tr', {},
          el('td', {}, p.name), el('td', {}, p.version), el('td', {}, (p.require || []).join(', ')),
          el('td', {}, Object.entries(p.approved || {}).map(([k, v]) => k + ': ' + v.join(', ')).join('; ')),
          el('td', {}, Object.entries(p.selector || {}).map(([k, v]) => k + '=' + v).join(' '))))));
      },
    };
  }

  // The audit log, with the chain's status: every entry read in order
  // (sequence numbers 1…N without a gap) and the last one is the head the
  // database holds. Hashes are not recomputed here: `trustpool audit
  // verify` does that.
  function auditView() {
    const status = el('p', { id: 'audit-status' });
    const list = el('div', { id: 'audit-list' });
    return {
      render(c) { c.append(el('h2', {}, 'Audit log'), status, list); },
      async refresh() {
        const head = await get('/v1/audit/head');
        const all = [];
        let after = 0;
        for (;;) {
          const page = await get('/v1/audit?after=' + after + '&limit=1000');
          if (!page || page.length === 0) break;
          all.push(...page);
          after = page[page.length - 1].seq;
          if (after >= head.seq) break;
        }
        let gap = null;
        all.forEach((e, i) => { if (gap === null && e.seq !== i + 1) gap = i + 1; });
        const last = all[all.length - 1];
        const ok = gap === null && (head.seq === 0 ? all.length === 0 : (last && last.seq === head.seq && last.hash === head.hash));
        status.className = ok ? 'ok' : 'error';
        status.setAttribute('data-ok', ok ? 'true' : 'false');
        status.textContent = ok ?
          'Chain consistent: ' + all.length + ' entries in sequence, the last matches the head (seq ' + head.seq + ').' :
          (gap !== null ? 'Chain broken: entry ' + gap + ' is missing or out of order. ' :
            'Chain does not match its head (seq ' + head.seq + '). ') + all.length + ' entries read.';
        list.replaceChildren(table('audit-table', ['seq', 'time', 'actor', 'action', 'subject'],
          all.slice(-200).reverse().map((e) => el('tr', {},
            el('td', {}, e.seq), el('td', {}, e.time), el('td', {}, e.actor), el('td', {}, e.action), el('td', {}, e.subject)))));
      },
    };
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('signin').addEventListener('submit', signin);
    $('signout').addEventListener('click', () => { current = null; showSignin('Signed out.'); });
    window.addEventListener('hashchange', route);
    route();
  });
})();
