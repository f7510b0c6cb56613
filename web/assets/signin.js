// The sign-in page (`/`): paste an access token, or arrive with `#token=`; signed in,
// it shows who you are and the pages your role may open.

import { api, boot, clear, h, homePageOf, setToken, ApiError } from './api.js';
import { t } from './i18n.js';

boot(async (me) => {
  const app = clear();
  if (me) {
    const pages = {
      admin: ['board', 'fleet'],
      agent: ['board', 'fleet'],
      technician: ['board'],
      homeowner: ['home'],
    }[me.role] ?? [];
    app.append(
      h('section', { class: 'card signin' },
        h('h1', {}, t('brand')),
        h('p', { id: 'whoami' }, t('signed_in_as', { label: `${t(`role_${me.role}`)}${me.subject ? ` · ${me.subject}` : ''}` })),
        h('ul', { class: 'links' }, pages.map((p) => h('li', {}, h('a', { href: `/${p}`, class: 'button' }, t(`nav_${p}`))))),
      ),
    );
    return;
  }
  const expired = location.search.includes('expired');
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const message = h('p', { class: 'error', id: 'signin-error', role: 'alert' }, expired ? t('bad_token') : '');
  const form = h('form', { class: 'card signin', id: 'signin' },
    h('h1', {}, t('sign_in_title')),
    h('label', { for: 'token' }, t('token_label')),
    input,
    h('p', { class: 'muted' }, t('token_hint')),
    message,
    h('button', { type: 'submit', class: 'primary' }, t('sign_in')),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    try {
      const who = await api('/me');
      location.href = homePageOf(who.role);
    } catch (e) {
      setToken(null);
      message.textContent = e instanceof ApiError && e.status === 401 ? t('bad_token') : t('error', { message: e.message });
    }
  });
  app.append(form);
}, { needsToken: false });
