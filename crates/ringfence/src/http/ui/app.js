// The dashboard shell: signs in, routes between pages, and gives each page what it needs.
//
// Each page is one script calling RF.page(name, { title, mount(root, params, ctx) }). The
// shell calls mount when the page is shown; everything the page starts through `ctx`
// (intervals, WebSockets, in-flight requests) is stopped when the analyst moves on, so a page
// left open all day holds only what it shows. Pages build the DOM with RF.el, which sets text,
// never HTML: a merchant name or reason can never run as code.
//
// Routes are hashes: #/<page>/<path...>?<query>, e.g. #/alerts/42, #/investigate/card/c-9.
"use strict";

const RF = (() => {
  const pages = new Map();
  let current = null; // { name, ctx }
  let me = null;

  /** An error answer of the API: status, code, field and message from its JSON body. */
  class ApiError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super(e.message || `HTTP ${status}`);
      this.status = status;
      this.code = e.code || null;
      this.field = e.field || null;
      this.body = body;
    }
  }

  /** Calls the API. Resolves to the parsed JSON (or null); rejects with ApiError. */
  async function request(method, path, body, signal) {
    const init = { method, headers: { accept: "application/json" }, credentials: "same-origin", signal };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const text = await res.text();
    let json = null;
    if (text) {
      try { json = JSON.parse(text); } catch (_) { json = { error: { message: text } }; }
    }
    if (res.status === 401 && path !== "/v1/auth/login") {
      showSignIn("Your session has ended; sign in again.");
    }
    if (!res.ok) throw new ApiError(res.status, json);
    return json;
  }

  const api = {
    get: (p, signal) => request("GET", p, undefined, signal),
    post: (p, b, signal) => request("POST", p, b === undefined ? {} : b, signal),
    put: (p, b, signal) => request("PUT", p, b, signal),
    del: (p, signal) => request("DELETE", p, undefined, signal),
  };

  /** Builds an element: el("td", {class: "num", onclick: f}, "text", child, ...). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k in node && typeof v !== "string") node[k] = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const count = new Intl.NumberFormat();
  const fmt = {
    money: (v) => (v === null || v === undefined ? "" : money.format(v)),
    count: (v) => (v === null || v === undefined ? "" : count.format(v)),
    pct: (v) => (v === null || v === undefined ? "" : `${(v * 100).toFixed(2)}%`),
    score: (v) => (v === null || v === undefined ? "" : Number(v).toFixed(0)),
    us: (v) => (v === null || v === undefined ? "" : v >= 1000 ? `${(v / 1000).toFixed(1)} ms` : `${Math.round(v)} µs`),
    time: (t) => {
      if (!t) return "";
      const d = new Date(t);
      return isNaN(d) ? String(t) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
    },
    decision: (d) => el("span", { class: `badge ${d || ""}` }, d || "?"),
  };

  /** A link to an entity's page. */
  function entityLink(type, id) {
    return el("a", { href: `#/investigate/${encodeURIComponent(type)}/${encodeURIComponent(id)}` }, id);
  }

  /** What a page gets: timers, sockets and requests that stop when the page is left. */
  function makeContext() {
    const timers = new Set();
    const sockets = new Set();
    const aborter = new AbortController();
    let live = true;
    return {
      get live() { return live; },
      signal: aborter.signal,
      /**
       * Calls fn every ms while the page is shown. When fn returns a promise, the ticks until
       * it settles are skipped: a refresh slower than its period is not overlapped by the next
       * one (both would write the same elements, and requests would pile up on a slow server).
       */
      every(ms, fn) {
        let running = false;
        const done = () => { running = false; };
        const id = setInterval(() => {
          if (!live || running) return;
          const r = fn();
          if (r && typeof r.then === "function") {
            running = true;
            // A rejection is still reported as unhandled, as it would be without this.
            r.then(done, (e) => { done(); throw e; });
          }
        }, ms);
        timers.add(id);
        return id;
      },
      after(ms, fn) {
        const id = setTimeout(() => { timers.delete(id); if (live) fn(); }, ms);
        timers.add(id);
        return id;
      },
      /** A WebSocket to `path` that reconnects (with backoff) until the page is left. */
      socket(path, onMessage, onState) {
        let ws = null;
        let backoff = 500;
        let closed = false; // by the page: no reconnecting
        const handle = { close() { closed = true; if (ws) ws.close(1000); } };
        const open = () => {
          if (!live || closed) return;
          const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
          ws = new WebSocket(url);
          sockets.add(ws);
          ws.onopen = () => { backoff = 500; if (onState) onState("open"); };
          ws.onmessage = (ev) => {
            let msg;
            try { msg = JSON.parse(ev.data); } catch (_) { return; }
            onMessage(msg);
          };
          ws.onclose = () => {
            sockets.delete(ws);
            if (onState) onState("closed");
            if (live && !closed) this.after(backoff, open);
            backoff = Math.min(backoff * 2, 10000);
          };
        };
        open();
        return handle;
      },
      stop() {
        live = false;
        aborter.abort();
        for (const id of timers) { clearInterval(id); clearTimeout(id); }
        timers.clear();
        for (const ws of sockets) ws.close(1000);
        sockets.clear();
      },
    };
  }

  /** Registers a page. */
  function page(name, def) { pages.set(name, def); }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, q] = raw.split("?");
    // A malformed escape (`%zz`) is kept as typed rather than failing the whole page.
    const decode = (p) => { try { return decodeURIComponent(p); } catch (_) { return p; } };
    const parts = path.split("/").filter(Boolean).map(decode);
    return { name: parts[0] || "live", parts: parts.slice(1), query: new URLSearchParams(q || "") };
  }

  function render() {
    if (!me) return;
    const route = parseHash();
    const def = pages.get(route.name);
    if (current) current.ctx.stop();
    const view = document.getElementById("view");
    view.replaceChildren();
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.page === route.name);
    }
    if (!def) {
      view.append(el("p", {}, `No page “${route.name}”.`));
      current = null;
      return;
    }
    document.title = `${def.title || route.name} · Ringfence`;
    const ctx = makeContext();
    current = { name: route.name, ctx };
    Promise.resolve()
      .then(() => def.mount(view, route, ctx))
      .catch((e) => {
        if (ctx.live && !(e && e.name === "AbortError")) view.append(el("p", { class: "error" }, String(e.message || e)));
      });
  }

  /**
   * Opens the search results for `q`. A card number never goes into an address (browser
   * history, proxy logs): it is sent in a POST body, the server hashes it, and the page opens
   * on the token it answers with.
   */
  async function search(q) {
    if (!q) return;
    const digits = q.replace(/[ -]/g, "");
    if (/^[0-9 -]+$/.test(q) && /^[0-9]{12,19}$/.test(digits)) {
      try {
        const r = await api.post("/v1/search", { q });
        go(`#/investigate?q=${encodeURIComponent(r.query)}`);
      } catch (e) {
        banner(`Search failed: ${e.message}`);
      }
      return;
    }
    go(`#/investigate?q=${encodeURIComponent(q)}`);
  }

  /** Navigates to a hash route. */
  function go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  function banner(text) {
    const b = document.getElementById("banner");
    b.textContent = text || "";
    b.hidden = !text;
  }

  function showSignIn(message) {
    me = null;
    if (current) { current.ctx.stop(); current = null; }
    document.getElementById("view").replaceChildren();
    for (const id of ["nav", "search", "who"]) document.getElementById(id).hidden = true;
    document.getElementById("sign-in").hidden = false;
    document.getElementById("sign-in-error").textContent = message || "";
    document.getElementById("sign-in-user").focus();
  }

  /**
   * Where to go after signing in, from `#/login?next=/path`: a path of this server only (the
   * till page sends its own address), never another site.
   */
  function nextPage() {
    const route = parseHash();
    const next = route.name === "login" ? route.query.get("next") : null;
    if (!next || !next.startsWith("/")) return null;
    // Parsed the way the browser will follow it (tabs and newlines dropped, backslashes as
    // slashes), so `/%09/evil.example` cannot become `//evil.example`: same origin or nothing.
    let url;
    try { url = new URL(next, location.origin); } catch (_) { return null; }
    return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
  }

  function signedIn(user) {
    const next = nextPage();
    if (next) {
      location.assign(next);
      return;
    }
    me = user;
    document.getElementById("sign-in").hidden = true;
    for (const id of ["nav", "search", "who"]) document.getElementById(id).hidden = false;
    document.getElementById("who-name").textContent = user.name;
    document.getElementById("who-role").textContent = user.role;
    // The sign-in address itself is no page: land on the first one.
    if (parseHash().name === "login") history.replaceState(null, "", "#/live");
    render();
  }

  async function start() {
    document.getElementById("sign-in-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const username = document.getElementById("sign-in-user").value;
      const password = document.getElementById("sign-in-password").value;
      try {
        const user = await api.post("/v1/auth/login", { username, password });
        document.getElementById("sign-in-password").value = "";
        signedIn(user);
      } catch (e) {
        document.getElementById("sign-in-error").textContent = e.message;
      }
    });
    document.getElementById("sign-out").addEventListener("click", async () => {
      try { await api.post("/v1/auth/logout"); } catch (_) { /* signed out either way */ }
      showSignIn("");
    });
    document.getElementById("search").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = document.getElementById("search-q");
      search(input.value.trim()).then(() => { input.value = ""; });
    });
    window.addEventListener("hashchange", render);
    try {
      signedIn(await api.get("/v1/auth/me"));
    } catch (e) {
      if (e.status === 401) showSignIn("");
      else banner(`The server did not answer as expected: ${e.message}`);
    }
  }

  document.addEventListener("DOMContentLoaded", start);

  return { api, ApiError, el, fmt, entityLink, page, go, search, banner, get me() { return me; } };
})();
