// Signing in (a tenant token or the admin token, exchanged for the session cookie by
// POST /api/v1/session: the token never goes in a URL) and the admin's tenant picker.
import { h, notice, type Html } from './layout.ts';

export function signInBody(reason: string | null): Html {
  return h`<div class="sign-in">
    <h1>Sign in</h1>
    ${reason ? notice('info', reason) : ''}
    <form data-api-method="POST" data-api-path="/api/v1/session" data-then="reload" class="stacked">
      <label for="token">Tenant token, or the admin token</label>
      <input id="token" name="token" type="password" required autocomplete="off" spellcheck="false" autofocus>
      <button type="submit">Sign in</button>
      <output class="form-error" role="alert"></output>
    </form>
    <p class="muted small">The token is exchanged for a session cookie (HttpOnly) that ends after 12 hours, or 2 hours unused. A tenant token comes from <code>POST /api/v1/tenants</code>; the admin token is printed on the first start.</p>
  </div>`;
}

type Tenant = { id: string; name: string; modules: string[] };

export function tenantsBody(tenants: Tenant[], current: string | null, more: boolean): Html {
  return h`<div class="sign-in">
    <h1>Choose a tenant</h1>
    <p>Signed in with the admin token. The dashboard shows one tenant at a time; you act in it as the admin (no tenant token is made, and your changes are recorded as the admin's).</p>
    ${tenants.length === 0 ? notice('info', 'No tenants yet: create one with POST /api/v1/tenants.') : h`
    <form data-api-method="POST" data-api-path="/api/v1/session/tenant" data-then="home" class="stacked">
      <label for="tenant_id">Tenant</label>
      <select id="tenant_id" name="tenant_id" required>
        ${tenants.map((t) => h`<option value="${t.id}"${t.id === current ? h` selected` : ''}>${t.name}</option>`)}
      </select>
      <button type="submit">Open</button>
      <output class="form-error" role="alert"></output>
    </form>`}
    ${more ? h`<p class="muted small">The 200 newest tenants are listed.</p>` : ''}
  </div>`;
}
