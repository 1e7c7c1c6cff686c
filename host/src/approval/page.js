// The approvers' page: lists pending approval requests and approves or denies them through
// /api/approvals. Every value from the API is put into the page as text (textContent,
// createElement), never as markup: summaries come from plugins and URLs from agents.
'use strict';

(() => {
  const TOKEN_KEY = 'portcullis.approvals.token';
  const REFRESH_MS = 5000;
  const CANNOT_DECIDE =
    'you cannot approve this request (your own, or not in an approver group)';

  const tokenInput = document.getElementById('token');
  const statusLine = document.getElementById('status');
  const rows = document.querySelector('#approvals tbody');

  let refreshTimer = null;
  let loadSeq = 0;
  // Server clock minus ours, from the Date header: time left is counted on the server's clock.
  let skew = 0;
  // What #status shows: 'count' (of the last load) and 'load' (a failed load) are replaced by
  // the next load; 'action' (what a decision did) and 'other' stay until the next action.
  let statusSource = 'other';

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  }

  function setStatus(text, kind, source = 'other') {
    statusLine.textContent = text;
    statusLine.className = kind || '';
    statusSource = source;
  }

  async function api(method, path, body) {
    const headers = { Authorization: 'Bearer ' + token(), Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'Network', 'the gateway could not be reached: ' + e.message);
    }
    const date = Date.parse(response.headers.get('Date') || '');
    if (!Number.isNaN(date)) {
      skew = date - Date.now();
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = data && typeof data === 'object' && data.error ? data.error : {};
      const message =
        typeof error.message === 'string' && error.message
          ? error.message
          : 'HTTP ' + response.status;
      throw new ApiError(response.status, String(error.code || ''), message);
    }
    return data;
  }

  // --- Rendering -----------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function str(value) {
    return value === undefined || value === null ? '' : String(value);
  }

  function timeLeft(expiresAt) {
    const ms = Number(expiresAt) - (Date.now() + skew);
    if (!Number.isFinite(ms)) return '?';
    if (ms <= 0) return 'expired';
    let s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    s %= 60;
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return m + 'm ' + s + 's';
    return s + 's';
  }

  function bytes(n) {
    const size = Number(n);
    if (!Number.isFinite(size)) return '?';
    if (size < 1024) return size + ' B';
    if (size < 1024 * 1024) return (size / 1024).toFixed(1) + ' KiB';
    return (size / (1024 * 1024)).toFixed(1) + ' MiB';
  }

  function when(ms) {
    const d = new Date(Number(ms));
    return Number.isNaN(d.getTime()) ? '' : d.toISOString();
  }

  function cell(className, ...children) {
    const td = el('td', className);
    for (const c of children) if (c) td.append(c);
    return td;
  }

  function buildRow(view) {
    const id = str(view.id);
    const tr = el('tr');
    tr.dataset.id = id;

    const idCode = el('code', 'id', id);
    idCode.title = 'requested ' + when(view.created_at) + '\nrequest digest ' + str(view.digest);
    tr.append(cell('c-id', idCode));

    const requester = view.requester || {};
    const who = [el('div', 'subject', requester.subject), el('div', 'muted issuer', requester.issuer)];
    if (requester.tenant) who.push(el('div', 'muted', 'tenant ' + requester.tenant));
    if (requester.app_id) who.push(el('div', 'muted', 'app ' + requester.app_id));
    tr.append(cell('c-requester', ...who));

    tr.append(cell('c-route', el('code', 'route', view.route), el('div', 'operation', view.operation)));

    tr.append(cell('c-summary', el('div', 'summary', view.summary), el('div', 'muted plugin', 'by ' + str(view.plugin))));

    const request = view.request || {};
    const line = el('code', 'request');
    line.append(el('span', 'method', request.method), ' ', el('span', 'url', request.url));
    const http = [line];
    const headers = Array.isArray(request.headers) ? request.headers : [];
    if (headers.length > 0) {
      const details = el('details', 'headers');
      details.append(el('summary', null, headers.length === 1 ? '1 header' : headers.length + ' headers'));
      const list = el('ul');
      for (const h of headers) {
        const pair = Array.isArray(h) ? h : [h, ''];
        const item = el('li');
        item.append(el('code', null, str(pair[0]) + ': ' + str(pair[1])));
        list.append(item);
      }
      details.append(list);
      http.push(details);
    }
    tr.append(cell('c-request', ...http));

    const body = request.body || {};
    const bodyParts = [el('div', 'size', bytes(body.size || 0))];
    if (Number(body.size) > 0) {
      if (body.content_type) bodyParts.push(el('div', 'muted', body.content_type));
      if (body.sha256) {
        const hash = el('code', 'sha256', 'sha256 ' + str(body.sha256).slice(0, 12) + '…');
        hash.title = 'sha256 ' + str(body.sha256);
        bodyParts.push(hash);
      }
    }
    tr.append(cell('c-body', ...bodyParts));

    const groups = Array.isArray(view.approver_groups) ? view.approver_groups.map(str) : [];
    tr.append(cell('c-groups', el('span', 'groups', groups.join(', '))));

    const left = el('span', 'left');
    left.dataset.expiresAt = str(view.expires_at);
    left.title = 'expires ' + when(view.expires_at);
    tr.append(cell('c-left', left));

    const decision = el('td', 'decision');
    const reason = el('input', 'reason');
    reason.type = 'text';
    reason.maxLength = 1000;
    reason.placeholder = 'reason';
    reason.title = 'optional to approve, required to deny';
    reason.setAttribute('aria-label', 'Reason for ' + id);
    const approve = el('button', 'approve', 'Approve');
    approve.type = 'button';
    approve.setAttribute('aria-label', 'Approve ' + id);
    const deny = el('button', 'deny', 'Deny');
    deny.type = 'button';
    deny.setAttribute('aria-label', 'Deny ' + id);
    const note = el('div', 'muted note', CANNOT_DECIDE);
    decision.append(reason, approve, deny, note);
    tr.append(decision);

    approve.addEventListener('click', () => decide(id, 'approve', tr));
    deny.addEventListener('click', () => decide(id, 'deny', tr));
    reason.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') event.preventDefault();
    });
    return tr;
  }

  // The parts of a row that change between two loads of the same request.
  function updateRow(tr, view) {
    const allowed = view.can_decide === true;
    tr.classList.toggle('readonly', !allowed);
    for (const button of tr.querySelectorAll('button.approve, button.deny')) {
      button.disabled = !allowed || tr.dataset.busy === '1';
      if (allowed) button.removeAttribute('title');
      else button.title = CANNOT_DECIDE;
    }
    tr.querySelector('input.reason').disabled = !allowed;
    tr.querySelector('.note').hidden = allowed;
    const left = tr.querySelector('.left');
    left.dataset.expiresAt = str(view.expires_at);
    left.textContent = timeLeft(view.expires_at);
  }

  // Update the table in place, keyed by id, so that a refresh keeps what an approver is typing.
  function render(approvals) {
    const existing = new Map();
    for (const tr of rows.querySelectorAll('tr[data-id]')) existing.set(tr.dataset.id, tr);
    const empty = rows.querySelector('tr.empty');
    if (empty) empty.remove();
    const seen = new Set();
    let previous = null;
    for (const view of approvals) {
      if (!view || typeof view !== 'object') continue;
      const id = str(view.id);
      if (seen.has(id)) continue;
      seen.add(id);
      let tr = existing.get(id);
      if (!tr) tr = buildRow(view);
      updateRow(tr, view);
      const wanted = previous ? previous.nextSibling : rows.firstChild;
      if (wanted !== tr) rows.insertBefore(tr, wanted);
      previous = tr;
    }
    for (const [id, tr] of existing) if (!seen.has(id)) tr.remove();
    if (seen.size === 0) {
      const tr = el('tr', 'empty');
      const td = el('td', null, 'No pending requests');
      td.colSpan = 9;
      tr.append(td);
      rows.append(tr);
    }
  }

  function tick() {
    for (const left of rows.querySelectorAll('.left')) {
      left.textContent = timeLeft(left.dataset.expiresAt);
    }
  }

  // --- Actions -------------------------------------------------------------------------------

  async function load(announce) {
    if (!token()) return;
    const seq = ++loadSeq;
    try {
      const data = await api('GET', '/api/approvals?status=pending');
      if (seq !== loadSeq) return;
      const list = data && Array.isArray(data.approvals) ? data.approvals : [];
      render(list);
      if (announce || statusSource === 'count' || statusSource === 'load') {
        const count = list.length === 1 ? '1 pending request' : list.length + ' pending requests';
        setStatus(count, 'ok', 'count');
      }
    } catch (e) {
      if (seq !== loadSeq) return;
      setStatus('Could not load the requests: ' + e.message, 'error', 'load');
      if (e.status === 401) {
        // A refused token stays refused: stop asking until a new one is given.
        stopRefresh();
      }
    }
  }

  async function decide(id, action, tr) {
    const reasonInput = tr.querySelector('input.reason');
    const reason = reasonInput.value.trim();
    if (action === 'deny' && !reason) {
      setStatus('Give a reason to deny ' + id + '.', 'error');
      reasonInput.focus();
      return;
    }
    const buttons = tr.querySelectorAll('button');
    tr.dataset.busy = '1';
    for (const b of buttons) b.disabled = true;
    setStatus((action === 'approve' ? 'Approving ' : 'Denying ') + id + '…', '');
    try {
      const view = await api('POST', '/api/approvals/' + encodeURIComponent(id) + '/' + action, reason ? { reason } : {});
      const done = view && view.status ? str(view.status) : action === 'approve' ? 'approved' : 'denied';
      setStatus(done + ' ' + id, 'ok', 'action');
    } catch (e) {
      setStatus('Could not ' + action + ' ' + id + ': ' + e.message, 'error', 'action');
    } finally {
      delete tr.dataset.busy;
    }
    await load(false);
  }

  function startRefresh() {
    stopRefresh();
    refreshTimer = setInterval(() => load(false), REFRESH_MS);
  }

  function stopRefresh() {
    if (refreshTimer !== null) clearInterval(refreshTimer);
    refreshTimer = null;
  }

  function useToken(event) {
    event.preventDefault();
    const typed = tokenInput.value.trim();
    if (typed) sessionStorage.setItem(TOKEN_KEY, typed);
    if (!token()) {
      setStatus('Paste an access token first.', 'error');
      tokenInput.focus();
      return;
    }
    tokenInput.value = '';
    tokenInput.placeholder = 'using the token kept in this tab';
    setStatus('Loading…', '');
    load(true);
    startRefresh();
  }

  function forget() {
    sessionStorage.removeItem(TOKEN_KEY);
    stopRefresh();
    loadSeq++;
    tokenInput.value = '';
    tokenInput.placeholder = 'eyJ…';
    rows.replaceChildren();
    setStatus('Token forgotten.', '');
  }

  document.getElementById('auth').addEventListener('submit', useToken);
  document.getElementById('forget').addEventListener('click', forget);
  setInterval(tick, 1000);
  if (token()) {
    tokenInput.placeholder = 'using the token kept in this tab';
    load(true);
    startRefresh();
  }
})();
