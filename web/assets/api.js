// Shared by every page: the bearer token (taken once from `#token=` or the sign-in form
// and kept in sessionStorage), the API client, the page boot (header, language switch,
// sign-out) and a small DOM builder that only ever sets text, never HTML.

import { t, applyStatic, getLang, setLang } from './i18n.js';

const TOKEN = 'fixture.token';

/** Moves a `#token=...` fragment into sessionStorage and removes it from the address bar. */
export function takeTokenFromHash() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN, value);
  else sessionStorage.removeItem(TOKEN);
}

/** An API answer other than 2xx: the HTTP status and the API's stable error code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls `/api{path}` with the bearer token; JSON in, JSON out. */
export async function api(path, { method = 'GET', body } = {}) {
  return call(`/api${path}`, { method, body, auth: true });
}

/** Calls a gateway endpoint outside /api (with the same bearer token). */
export async function gateway(path) {
  return call(path, { method: 'GET', auth: true });
}

async function call(url, { method, body, auth }) {
  const headers = {};
  if (auth) headers.Authorization = `Bearer ${token() ?? ''}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    throw new ApiError(res.status, data?.error?.code ?? `http_${res.status}`, data?.error?.message ?? res.statusText);
  }
  return data;
}

/**
 * `h('p', { class: 'x', onclick: f }, 'text', child)`: an element. Attributes starting with
 * `on` become listeners; strings become text nodes (never parsed as HTML).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** The page's main element, emptied. */
export function clear() {
  const app = document.getElementById('app');
  app.replaceChildren();
  return app;
}

/** A notice in place of the page (not allowed, errors). */
export function notice(kind, text) {
  const app = clear();
  app.append(h('div', { class: `notice ${kind}`, id: kind === 'denied' ? 'not-allowed' : undefined, role: 'alert' }, text));
}

/** Shows `e` the way the user needs it: a 403/404 is "not allowed", a 401 asks to sign in. */
export function showError(e) {
  if (e instanceof ApiError && e.status === 401) {
    setToken(null);
    location.href = '/';
  } else if (e instanceof ApiError && (e.status === 403 || e.status === 404)) {
    notice('denied', t('not_allowed'));
  } else {
    notice('error', t('error', { message: e.message }));
  }
}

/**
 * Boots a page: token, header, language switch; then `render(me)` with the caller
 * (`/api/me`). Without a token the page sends the user to the sign-in page.
 */
export async function boot(render, { needsToken = true } = {}) {
  takeTokenFromHash();
  applyStatic();
  const lang = document.getElementById('lang');
  const signout = document.getElementById('signout');
  let me = null;
  const rerender = async () => {
    applyStatic();
    lang.textContent = getLang() === 'zh' ? 'English' : '中文';
    try {
      await render(me);
    } catch (e) {
      showError(e);
    }
  };
  lang.addEventListener('click', () => {
    setLang(getLang() === 'zh' ? 'en' : 'zh');
    rerender();
  });
  signout.addEventListener('click', () => {
    setToken(null);
    location.href = '/';
  });
  if (token()) {
    try {
      me = await api('/me');
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        setToken(null);
        if (needsToken) {
          location.href = '/?expired';
          return;
        }
      } else {
        showError(e);
        return;
      }
    }
  }
  if (!me && needsToken) {
    location.href = '/';
    return;
  }
  if (me) {
    signout.hidden = false;
    const show = {
      admin: ['board', 'fleet', 'home'],
      agent: ['board', 'fleet', 'home'],
      technician: ['board'],
      homeowner: ['home'],
    }[me.role] ?? [];
    for (const a of document.querySelectorAll('#nav a')) {
      a.hidden = !show.includes(a.getAttribute('href').slice(1));
    }
    const page = document.body.dataset.page;
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.getAttribute('href') === `/${page}`) a.setAttribute('aria-current', 'page');
    }
  } else {
    for (const a of document.querySelectorAll('#nav a')) a.hidden = true;
  }
  await rerender();
}

/** The default page of a role. */
export function homePageOf(role) {
  return role === 'homeowner' ? '/home' : '/board';
}
