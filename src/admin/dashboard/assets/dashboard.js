// aperture dashboard: vanilla JavaScript, no dependencies, no build step.
//
// The page is rendered by the admin listener; this script fills it from the same-origin JSON
// endpoints under /dashboard/api/ and sends the mutations there with the per-process CSRF token
// of the page's <meta name="csrf-token"> in an X-CSRF-Token header. It never sees the admin
// macaroon. Untrusted text (service names, regexps) only ever reaches the DOM as text nodes.
'use strict';

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const view = document.body.dataset.view;
  // Go's dashboard refreshes every 30 s.
  const REFRESH_MS = 30000;
  const PAGE_SIZE = 25;

  // ---- helpers -------------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs, text) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  const $ = (id) => document.getElementById(id);

  function setText(id, text) {
    const el = $(id);
    if (el) el.textContent = text;
  }

  const fmtNum = (n) => Number(n).toLocaleString('en-US');

  // Times are shown in UTC, the zone of the server's day buckets.
  function fmtTime(secs) {
    if (secs === null || secs === undefined) return '–';
    return new Date(secs * 1000).toISOString().slice(0, 16).replace('T', ' ');
  }

  async function api(method, path, body) {
    const opts = {
      method,
      headers: { Accept: 'application/json' },
      credentials: 'same-origin',
      cache: 'no-store',
    };
    if (method !== 'GET') {
      opts.headers['X-CSRF-Token'] = csrf;
      if (body !== undefined) {
        opts.headers['Content-Type'] = 'application/json';
        opts.body = JSON.stringify(body);
      }
    }
    const resp = await fetch('/dashboard/api/' + path, opts);
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      data = null;
    }
    if (!resp.ok) {
      throw new Error((data && data.error) || resp.status + ' ' + resp.statusText);
    }
    return data;
  }

  let flashTimer = null;
  function flash(message, isError) {
    const el = $('flash');
    el.textContent = message;
    el.className = 'flash' + (isError ? ' error' : '');
    el.dataset.kind = isError ? 'error' : 'ok';
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => el.classList.add('hidden'), 6000);
  }

  // A button that needs a second click within 4 s (no blocking confirm() dialogs).
  function armed(button, label, action) {
    let timer = null;
    button.addEventListener('click', async () => {
      if (!button.classList.contains('armed')) {
        button.classList.add('armed');
        button.textContent = 'Confirm ' + label.toLowerCase() + '?';
        timer = setTimeout(() => {
          button.classList.remove('armed');
          button.textContent = label;
        }, 4000);
        return;
      }
      clearTimeout(timer);
      button.disabled = true;
      try {
        await action();
      } finally {
        button.disabled = false;
        button.classList.remove('armed');
        button.textContent = label;
      }
    });
  }

  // Marks the page as loaded once (the browser test waits for it), and shows errors.
  async function run(load) {
    try {
      await load();
      document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    } catch (e) {
      flash(e.message, true);
    }
  }

  // ---- home ----------------------------------------------------------------------------------

  function niceStep(x) {
    const pow = Math.pow(10, Math.floor(Math.log10(Math.max(x, 1))));
    for (const m of [1, 2, 5, 10]) if (m * pow >= x) return m * pow;
    return 10 * pow;
  }

  function drawChart(box, days) {
    box.replaceChildren();
    if (!days.length) {
      box.append(h('p', { class: 'muted', text: 'No revenue in this range.' }));
      return;
    }
    const W = 900;
    const H = 260;
    const padL = 60;
    const padR = 16;
    const padT = 14;
    const padB = 34;
    const plotW = W - padL - padR;
    const plotH = H - padT - padB;
    const max = days.reduce((m, d) => Math.max(m, d.revenue_sats), 0);
    const step = niceStep(Math.max(max, 4) / 4);
    const top = Math.max(step, Math.ceil(max / step) * step);
    const y = (v) => padT + plotH * (1 - v / top);
    const chart = s('svg', {
      viewBox: `0 0 ${W} ${H}`,
      role: 'img',
      'aria-label': 'Revenue per day, satoshis',
    });
    for (let v = 0; v <= top; v += step) {
      chart.append(s('line', { class: 'grid', x1: padL, x2: W - padR, y1: y(v), y2: y(v) }));
      chart.append(
        s('text', { class: 'label', x: padL - 8, y: y(v) + 4, 'text-anchor': 'end' }, fmtNum(v)),
      );
    }
    chart.append(s('line', { class: 'axis', x1: padL, x2: W - padR, y1: y(0), y2: y(0) }));
    const bw = plotW / days.length;
    const every = Math.ceil(days.length / 8);
    days.forEach((d, i) => {
      const x = padL + i * bw;
      const bh = plotH * (d.revenue_sats / top);
      const bar = s('rect', {
        class: 'bar',
        x: x + bw * 0.15,
        y: y(0) - bh,
        width: Math.max(1, bw * 0.7),
        height: bh,
        'data-day': d.day,
        'data-sats': d.revenue_sats,
      });
      bar.append(s('title', {}, `${d.day}: ${fmtNum(d.revenue_sats)} sats, ${d.count} payments`));
      chart.append(bar);
      // Every few days, and the last day when it does not crowd the one before.
      const last = i === days.length - 1 && i % every >= every / 2;
      if (i % every === 0 || last) {
        chart.append(
          s('text', { class: 'label', x: x + bw / 2, y: H - 12, 'text-anchor': 'middle' }, d.day.slice(5)),
        );
      }
    });
    box.append(chart);
  }

  async function loadHome() {
    const days = $('range').value;
    const o = await api('GET', 'overview?days=' + encodeURIComponent(days));
    const label = days === '0' ? 'all time' : 'last ' + days + ' days';
    setText('t-revenue', fmtNum(o.revenue_sats));
    setText('t-revenue-sub', 'sats settled, ' + label);
    setText('t-transactions', fmtNum(o.transaction_count));
    setText('t-transactions-sub', 'settled payments, ' + label);
    setText('t-settled', fmtNum(o.settled_count));
    setText('t-pending', fmtNum(o.pending_count));
    const all = o.settled_count + o.pending_count;
    $('t-split').style.width = (all ? (100 * o.settled_count) / all : 0) + '%';
    setText('t-services', fmtNum(o.active_services));
    setText('t-services-sub', `${o.db_services} from the database, ${o.active_services - o.db_services} from the file`);
    setText('chart-total', `${fmtNum(o.revenue_sats)} sats, ${label}`);
    drawChart($('chart'), o.days);

    const rows = o.per_service.map((r) => {
      const bar = h('div', { class: 'hbar' });
      bar.style.width = (o.revenue_sats ? (100 * r.revenue_sats) / o.revenue_sats : 0) + '%';
      return h(
        'tr',
        { dataset: { service: r.service_name } },
        h('td', { text: r.service_name || '(unknown)' }),
        h('td', { class: 'num', text: fmtNum(r.count) }),
        h('td', { class: 'num', text: fmtNum(r.revenue_sats) }),
        h('td', { class: 'bar-cell' }, bar),
      );
    });
    if (!rows.length) rows.push(h('tr', {}, h('td', { class: 'empty', colspan: 4, text: 'No settled payments in this range.' })));
    $('per-service').replaceChildren(...rows);
    if (o.refunded_sats) setText('refunds', `Session refunds paid back in this range: ${fmtNum(o.refunded_sats)} sats (not subtracted).`);
    else setText('refunds', '');
  }

  // ---- transactions --------------------------------------------------------------------------

  let txOffset = 0;

  function txParams() {
    const form = $('tx-filters');
    const p = new URLSearchParams();
    for (const name of ['service', 'state', 'from', 'to']) {
      const v = form.elements[name].value;
      if (v) p.set(name, v);
    }
    return p;
  }

  async function fillServiceSelect() {
    const select = $('tx-filters').elements.service;
    const keep = select.value;
    const list = await api('GET', 'services');
    const names = new Set(list.map((x) => x.name));
    select.replaceChildren(
      h('option', { value: '', text: 'All services' }),
      ...[...names].sort().map((n) => h('option', { value: n, text: n })),
    );
    if (keep && names.has(keep)) select.value = keep;
  }

  function txRow(t) {
    const stateBadge = h('span', {
      class: 'badge ' + (t.state === 'settled' ? 'good' : 'warn'),
      text: t.state,
    });
    const action = h('div', { class: 'actions' });
    if (t.revoked_at) {
      action.append(h('span', { class: 'badge bad', text: 'revoked', title: 'revoked ' + fmtTime(t.revoked_at) }));
    } else if (t.state === 'settled' && t.kind === 'l402') {
      const b = h('button', { class: 'danger small revoke', type: 'button', text: 'Revoke' });
      armed(b, 'Revoke', async () => {
        try {
          await api('DELETE', 'tokens/' + t.token_id);
          flash('Token ' + t.token_id.slice(0, 12) + '… revoked');
          await loadTx();
        } catch (e) {
          flash(e.message, true);
        }
      });
      action.append(b);
    }
    return h(
      'tr',
      { dataset: { txId: t.id, service: t.service_name, state: t.state } },
      h('td', { text: fmtTime(t.created_at) }),
      h('td', { text: t.service_name || '(unknown)' }),
      h('td', { text: t.kind }),
      h('td', { class: 'num', text: fmtNum(t.price_sats) }),
      h('td', {}, stateBadge),
      h('td', { text: fmtTime(t.settled_at) }),
      h('td', { class: 'mono', title: t.token_id, text: t.token_id.slice(0, 16) + '…' }),
      h('td', {}, action),
    );
  }

  async function loadTx() {
    const p = txParams();
    $('csv').href = '/dashboard/api/transactions.csv' + (p.toString() ? '?' + p : '');
    p.set('limit', PAGE_SIZE);
    p.set('offset', txOffset);
    const page = await api('GET', 'transactions?' + p);
    const rows = page.transactions.map(txRow);
    if (!rows.length) rows.push(h('tr', {}, h('td', { class: 'empty', colspan: 8, text: 'No transactions match.' })));
    $('tx-body').replaceChildren(...rows);
    const n = page.transactions.length;
    setText(
      'page-info',
      page.total_count ? `${fmtNum(txOffset + 1)}–${fmtNum(txOffset + n)} of ${fmtNum(page.total_count)}` : '0 of 0',
    );
    $('prev').disabled = txOffset === 0;
    $('next').disabled = txOffset + n >= page.total_count;
  }

  function initTx() {
    const form = $('tx-filters');
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      txOffset = 0;
      run(loadTx);
    });
    $('tx-reset').addEventListener('click', () => {
      form.reset();
      txOffset = 0;
      run(loadTx);
    });
    $('prev').addEventListener('click', () => {
      txOffset = Math.max(0, txOffset - PAGE_SIZE);
      run(loadTx);
    });
    $('next').addEventListener('click', () => {
      txOffset += PAGE_SIZE;
      run(loadTx);
    });
  }

  // ---- services ------------------------------------------------------------------------------

  const FIELDS = ['name', 'address', 'protocol', 'host_regexp', 'path_regexp', 'price', 'auth', 'auth_scheme'];
  let editing = null;

  function serviceRow(svc) {
    const price = h('input', {
      type: 'number',
      min: 0,
      step: 1,
      value: svc.price,
      class: 'price-input',
      'aria-label': 'price of ' + svc.name,
    });
    const save = h('button', { class: 'small price-save', type: 'button', text: 'Save' });
    const savePrice = async () => {
      const v = Number(price.value);
      if (!Number.isInteger(v) || v < 0) {
        flash('The price must be a whole number of satoshis', true);
        return;
      }
      save.disabled = true;
      try {
        const got = await api('PUT', 'services/' + encodeURIComponent(svc.name), { price: v });
        flash(
          `${got.name} now costs ${fmtNum(got.price)} sats` +
            (got.overrides_file ? ' (a database service now overrides the file\'s)' : ''),
        );
        await loadServices();
      } catch (e) {
        flash(e.message, true);
      } finally {
        save.disabled = false;
      }
    };
    save.addEventListener('click', savePrice);
    price.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') savePrice();
    });
    const edit = h('button', { class: 'small', type: 'button', text: 'Edit', onclick: () => startEdit(svc) });
    // Only database services can be deleted here (a file service is the file's to remove).
    let del = null;
    if (svc.source === 'db') {
      del = h('button', { class: 'small danger', type: 'button', text: 'Delete' });
      armed(del, 'Delete', async () => {
        try {
          await api('DELETE', 'services/' + encodeURIComponent(svc.name));
          flash('Service ' + svc.name + ' deleted');
          await loadServices();
        } catch (e) {
          flash(e.message, true);
        }
      });
    }
    return h(
      'tr',
      { dataset: { service: svc.name } },
      h('td', {}, h('strong', { text: svc.name })),
      h('td', {}, h('span', { class: 'badge ' + svc.source, text: svc.source })),
      h('td', { class: 'mono', text: `${svc.protocol}://${svc.address}` }),
      h('td', { class: 'mono', title: 'host ' + svc.host_regexp, text: svc.path_regexp }),
      h('td', {}, h('div', { class: 'price-cell' }, price, save)),
      h('td', { text: svc.auth || 'on' }),
      h('td', { text: svc.auth_scheme }),
      h('td', {}, h('div', { class: 'actions' }, edit, del)),
    );
  }

  async function loadServices() {
    const list = await api('GET', 'services');
    const rows = list.map(serviceRow);
    if (!rows.length) rows.push(h('tr', {}, h('td', { class: 'empty', colspan: 8, text: 'No services yet.' })));
    $('svc-body').replaceChildren(...rows);
  }

  function startEdit(svc) {
    editing = svc;
    const form = $('svc-form');
    for (const f of FIELDS) form.elements[f].value = svc[f] === undefined ? '' : svc[f];
    form.elements.name.readOnly = true;
    setText('svc-form-title', 'Edit ' + svc.name);
    setText('svc-submit', 'Save changes');
    $('svc-cancel').classList.remove('hidden');
    form.scrollIntoView();
  }

  function stopEdit() {
    editing = null;
    const form = $('svc-form');
    form.reset();
    form.elements.name.readOnly = false;
    setText('svc-form-title', 'Add a service');
    setText('svc-submit', 'Add service');
    $('svc-cancel').classList.add('hidden');
  }

  function initServices() {
    const form = $('svc-form');
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = {};
      for (const f of FIELDS) {
        const v = form.elements[f].value.trim();
        if (f === 'price') {
          if (v !== '') body.price = Number(v);
        } else if (v !== '') {
          body[f] = v;
        }
      }
      try {
        if (editing) {
          const name = editing.name;
          delete body.name;
          // Only what changed: Go's update leaves empty fields as they are.
          for (const f of Object.keys(body)) if (String(body[f]) === String(editing[f])) delete body[f];
          const got = await api('PUT', 'services/' + encodeURIComponent(name), body);
          flash('Service ' + name + ' updated' + (got.overrides_file ? ' (now a database service overriding the file\'s)' : ''));
        } else {
          const got = await api('POST', 'services', body);
          flash('Service ' + got.name + ' added');
        }
        stopEdit();
        await loadServices();
      } catch (err) {
        flash(err.message, true);
      }
    });
    $('svc-cancel').addEventListener('click', stopEdit);
  }

  // ---- node ----------------------------------------------------------------------------------

  async function loadNode() {
    const n = await api('GET', 'node');
    for (const [k, v] of Object.entries(n.fields)) setText('n-' + k, v);
    const conn = $('n-lnd_connected');
    conn.className = 'badge ' + (n.node.lnd_connected ? 'good' : 'bad');
    const cap = n.node.bridge_queue_capacity;
    $('n-queue-fill').style.width = (cap ? Math.min(100, (100 * n.node.bridge_queue_depth) / cap) : 0) + '%';
  }

  // ---- start ---------------------------------------------------------------------------------

  const views = {
    home: { init: () => $('range').addEventListener('change', () => run(loadHome)), load: loadHome },
    transactions: {
      init: initTx,
      load: async () => {
        await fillServiceSelect();
        await loadTx();
      },
    },
    services: { init: initServices, load: loadServices },
    node: { init: () => {}, load: loadNode },
  };
  const current = views[view];
  if (current) {
    current.init();
    run(current.load);
    setInterval(() => {
      // Do not refresh under the operator's hands (an open edit, a typed price).
      if (view === 'services' && (editing || document.activeElement.tagName === 'INPUT')) return;
      run(view === 'transactions' ? loadTx : current.load);
    }, REFRESH_MS);
  }
})();
