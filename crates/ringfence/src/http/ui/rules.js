// The rules page (#/rules): the rules in force with their hits and a shadow/active switch, and
// an editor for the rule file: validate (each error at its line), backtest over the last hours
// of stored history, activate (new rules optionally in shadow).
//
// Bounded for a day left open: the table holds one row per rule in force (at most 1000, rows
// kept by name and updated in place every 5 s), the gutter one line number per line of the
// text, and the error and backtest lists only the latest answer.
"use strict";

(() => {
  const { el, api, fmt } = RF;
  const REFRESH_MS = 5000;
  const HOURS = [1, 6, 24, 72, 168, 720];
  const MAX_ERRORS_LISTED = 200;

  /** A textarea with a line-number gutter that scrolls with it; lines can be marked. */
  function makeEditor() {
    const gutter = el("div", { class: "rules-gutter", id: "rules-gutter", "aria-hidden": "true" });
    const text = el("textarea", {
      class: "rules-text", id: "rules-editor", spellcheck: "false", wrap: "off",
      "aria-label": "Rule file (TOML)", autocomplete: "off",
    });
    const wrap = el("div", { class: "rules-editor" }, gutter, text);
    let lines = 0;
    const marks = new Map(); // line -> message

    /** Keeps one number per line of the text (rebuilt only when the count changes). */
    function renumber() {
      const n = text.value.split("\n").length;
      if (n === lines) return;
      while (lines < n) {
        lines += 1;
        const line = el("div", { dataset: { line: String(lines) } }, String(lines));
        if (marks.has(lines)) { line.classList.add("line-error"); line.title = marks.get(lines); }
        gutter.append(line);
      }
      while (lines > n) {
        gutter.lastChild.remove();
        lines -= 1;
      }
      gutter.scrollTop = text.scrollTop;
    }

    function unmark() {
      for (const line of marks.keys()) {
        const node = gutter.children[line - 1];
        if (node) { node.classList.remove("line-error"); node.removeAttribute("title"); }
      }
      marks.clear();
    }

    /** Marks the gutter at each error's line (the message as its tooltip). */
    function mark(errors) {
      unmark();
      for (const e of errors) {
        if (!(e.line >= 1)) continue;
        const previous = marks.get(e.line);
        marks.set(e.line, previous ? `${previous}\n${e.message}` : e.message);
        const node = gutter.children[e.line - 1];
        if (node) { node.classList.add("line-error"); node.title = marks.get(e.line); }
      }
    }

    /** Puts the caret at a 1-based line and column (in characters) and scrolls it into view. */
    function jump(line, column) {
      const all = text.value.split("\n");
      const l = Math.min(Math.max(line, 1), all.length);
      let offset = 0;
      for (let i = 0; i < l - 1; i++) offset += all[i].length + 1;
      // Columns count characters, not UTF-16 units: walk code points.
      const chars = Array.from(all[l - 1]);
      offset += chars.slice(0, Math.max(column - 1, 0)).join("").length;
      text.focus();
      text.setSelectionRange(offset, offset);
      const lineHeight = parseFloat(getComputedStyle(text).lineHeight) || 20;
      const top = (l - 1) * lineHeight;
      if (top < text.scrollTop || top > text.scrollTop + text.clientHeight - lineHeight) {
        text.scrollTop = Math.max(top - text.clientHeight / 3, 0);
      }
      gutter.scrollTop = text.scrollTop;
    }

    text.addEventListener("scroll", () => { gutter.scrollTop = text.scrollTop; });
    text.addEventListener("input", renumber);
    return {
      root: wrap, text, mark, unmark, jump,
      get value() { return text.value; },
      set value(v) { text.value = v; text.scrollTop = 0; renumber(); },
    };
  }

  /** The rules-in-force table: rows kept by rule name, updated in place. */
  function makeRulesTable(onToggle) {
    const body = el("tbody");
    const table = el("table", { id: "rules-table" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Rule"), el("th", {}, "Category"), el("th", {}, "Mode"),
        el("th", { class: "num" }, "Score"), el("th", {}, "Action"),
        el("th", { class: "num" }, "Hits"), el("th", {}, ""))),
      body);
    const rows = new Map(); // name -> { tr, cells, toggle }

    function row(name) {
      let r = rows.get(name);
      if (r) return r;
      const cells = {
        name: el("td", {}, el("span", { class: "mono" }, name)),
        category: el("td"), mode: el("td"), score: el("td", { class: "num" }),
        action: el("td"), hits: el("td", { class: "num" }),
      };
      const toggle = el("button", { type: "button", class: "rules-toggle", dataset: { rule: name } });
      toggle.addEventListener("click", () => onToggle(name, toggle.dataset.to, toggle));
      const tr = el("tr", { dataset: { rule: name } },
        cells.name, cells.category, cells.mode, cells.score, cells.action, cells.hits,
        el("td", {}, toggle));
      r = { tr, cells, toggle };
      rows.set(name, r);
      return r;
    }

    /** Shows `rules` (from GET /v1/rules) in file order. */
    function update(rules, admin) {
      const seen = new Set();
      let before = null;
      for (const rule of rules) {
        seen.add(rule.name);
        const r = row(rule.name);
        r.tr.title = `${rule.description ? rule.description + "\n" : ""}when ${rule.when}`;
        r.cells.category.textContent = rule.category;
        r.cells.mode.replaceChildren(el("span", { class: `badge mode-${rule.mode}` }, rule.mode));
        r.cells.score.textContent = fmt.score(rule.score);
        r.cells.action.replaceChildren(rule.action ? fmt.decision(rule.action) : "");
        r.cells.hits.textContent = fmt.count(rule.hits);
        r.tr.classList.toggle("shadow", rule.mode === "shadow");
        const to = rule.mode === "shadow" ? "active" : "shadow";
        r.toggle.dataset.to = to;
        r.toggle.textContent = to === "shadow" ? "Put in shadow" : "Make active";
        r.toggle.disabled = !admin;
        r.toggle.title = admin ? "" : "Only an admin changes the rules in force";
        // Keep file order without re-inserting rows that are already in place.
        const next = before ? before.nextSibling : body.firstChild;
        if (next !== r.tr) body.insertBefore(r.tr, next);
        before = r.tr;
      }
      for (const [name, r] of rows) {
        if (!seen.has(name)) { r.tr.remove(); rows.delete(name); }
      }
    }
    return { root: table, update };
  }

  /** The backtest answer as a table: the candidate next to the rule in force of its name. */
  function backtestView(r) {
    const w = r.window;
    const summary = el("p", { class: "muted", id: "rules-backtest-summary" },
      w ? `Window ${fmt.time(w.from)} – ${fmt.time(w.to)} (${w.hours} h, ending at the latest stored event): `
        + `${fmt.count(r.events_in_window)} transactions, ${fmt.count(r.fraud_labels_in_window)} labelled fraud, `
        + `${fmt.count(r.labelled_in_window.not_fraud)} labelled not fraud. `
        + `Replayed ${fmt.count(r.history_transactions)} stored transactions and ${fmt.count(r.history_labels)} labels in ${fmt.count(r.elapsed_ms)} ms.`
        : "No stored transactions yet: nothing to backtest against.");
    const samples = (ids) => ids.flatMap((id, i) => [i ? ", " : "", el("a", { href: `#/investigate?q=${encodeURIComponent(id)}`, class: "mono" }, id)]);
    // What the edit changes first (new rules, other conditions or modes), then the rest, each
    // group in file order.
    const change = (rule) => (!rule.active ? "new"
      : rule.active.when !== rule.when || rule.active.mode !== rule.mode ? "changed" : "");
    const ordered = r.rules.map((rule, i) => ({ rule, i, change: change(rule) }))
      .sort((x, y) => (x.change ? 0 : 1) - (y.change ? 0 : 1) || x.i - y.i);
    const rows = ordered.map(({ rule, change: what }) => {
      const a = rule.active;
      return el("tr", { dataset: { rule: rule.name }, class: what ? "rules-changed" : undefined },
        el("td", {}, el("span", { class: "mono", title: `when ${rule.when}` }, rule.name),
          what ? [" ", el("span", { class: "badge rules-change" }, what)] : ""),
        el("td", {}, el("span", { class: `badge mode-${rule.mode}` }, rule.mode)),
        el("td", { class: "num", dataset: { col: "hits" } }, fmt.count(rule.hits)),
        el("td", { class: "num", dataset: { col: "fraud" } }, fmt.count(rule.confirmed_fraud)),
        el("td", { class: "num", dataset: { col: "fp" } }, fmt.count(rule.false_positives)),
        el("td", { class: "num" }, fmt.count(rule.unlabelled)),
        a
          ? el("td", { class: "num muted", title: `in force: ${a.mode}, when ${a.when}` },
            `${fmt.count(a.hits)} / ${fmt.count(a.confirmed_fraud)} / ${fmt.count(a.false_positives)}`)
          : el("td", { class: "muted num" }, "—"),
        el("td", {}, samples(rule.samples)));
    });
    const partial = r.this_node_only
      ? el("p", { class: "error" }, "Only this node's records were replayed: with shared state and records in each node's own store, the other nodes' transactions are missing, so features and hits are undercounted. Store records in PostgreSQL (--postgres) for a backtest over every node.")
      : "";
    return el("div", { id: "rules-backtest-result" }, summary, partial,
      el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {},
          el("th", {}, "Rule"), el("th", {}, "Mode"), el("th", { class: "num" }, "Hits"),
          el("th", { class: "num" }, "Confirmed fraud"), el("th", { class: "num" }, "False positives"),
          el("th", { class: "num" }, "Unlabelled"),
          el("th", { class: "num", title: "hits / confirmed fraud / false positives of the rule of this name in force" }, "In force now"),
          el("th", {}, "Latest hits"))),
        el("tbody", {}, rows))));
  }

  RF.page("rules", {
    title: "Rules",
    async mount(root, _route, ctx) {
      const admin = RF.me && RF.me.role === "admin";
      const editor = makeEditor();
      const status = el("p", { id: "rules-status", class: "muted", role: "status" });
      const errorList = el("ol", { id: "rules-errors", class: "rules-errors" });
      const results = el("div", { id: "rules-results" });
      const summary = el("p", { class: "muted", id: "rules-summary" });
      let loaded = ""; // the text in force when last loaded into the editor
      let version = null;
      let busy = false;

      const say = (text, kind) => {
        status.textContent = text;
        status.className = kind === "error" ? "error" : kind === "ok" ? "rules-ok" : "muted";
      };
      const failed = (e) => {
        if (e && e.name === "AbortError") return;
        const code = e && e.code ? ` (${e.code})` : "";
        say(`${e && e.status ? `HTTP ${e.status}: ` : ""}${e.message || e}${code}`, "error");
      };

      function showErrors(all) {
        editor.mark(all);
        // A pasted file of garbage can have thousands: the list shows the first ones.
        const errors = all.slice(0, MAX_ERRORS_LISTED);
        const more = all.length - errors.length;
        errorList.replaceChildren(...errors.map((e) => el("li", {
          class: "clickable", tabindex: "0", dataset: { line: String(e.line), column: String(e.column) },
          onclick: () => editor.jump(e.line, e.column),
          onkeydown: (ev) => { if (ev.key === "Enter") editor.jump(e.line, e.column); },
        }, el("span", { class: "mono" }, `line ${e.line}, column ${e.column}`),
        e.rule ? ` · ${e.rule}` : "", `: ${e.message}`)),
        more > 0 ? el("li", { class: "muted" }, `and ${fmt.count(more)} more (each marked in the gutter)`) : "");
      }
      function clearErrors() { editor.unmark(); errorList.replaceChildren(); }

      /** Runs one action on the text with the buttons disabled; 422s become the error list. */
      async function act(label, fn) {
        if (busy) {
          say("Another action is still running; try again when it has finished.");
          return;
        }
        busy = true;
        for (const b of buttons) b.disabled = true;
        say(`${label}…`);
        try {
          await fn();
        } catch (e) {
          if (e && e.status === 422 && e.body && e.body.error && Array.isArray(e.body.error.errors)) {
            showErrors(e.body.error.errors);
            say(e.message, "error");
          } else {
            failed(e);
          }
        } finally {
          busy = false;
          enable();
        }
      }

      async function loadSource() {
        const s = await api.get("/v1/rules/source", ctx.signal);
        loaded = s.source;
        version = s.version;
        editor.value = s.source;
        clearErrors();
        say(`Version ${s.version} in force${s.path ? ` (${s.path})` : " (built-in defaults)"}, loaded ${fmt.time(s.loaded_at)}.`);
      }

      const table = makeRulesTable((name, to, button) => act(`Setting ${name} to ${to}`, async () => {
        button.disabled = true;
        const r = await api.post(`/v1/rules/${encodeURIComponent(name)}/mode`, { mode: to }, ctx.signal);
        await refresh();
        if (editor.value === loaded) await loadSource();
        say(`${name} is ${r.mode}; version ${r.version} in force.`, "ok");
      }));

      async function refresh() {
        const v = await api.get("/v1/rules", ctx.signal);
        table.update(v.rules, admin);
        const hits = v.hits || { active: 0, shadow: 0 };
        summary.textContent = `${v.rules.length} rules, version ${v.status.version}. Hits since loaded: `
          + `${fmt.count(hits.active)} active, ${fmt.count(hits.shadow)} in shadow (recorded, no effect on decisions).`
          + (v.status.last_error ? " The last reload of the file failed; the rules above still run." : "");
        if (version !== null && v.status.version !== version && editor.value !== loaded) {
          version = v.status.version; // said once per change
          say(`The rules in force changed (version ${v.status.version}); your edits are kept. “Load rules in force” discards them.`);
        }
      }

      const hours = el("select", { id: "rules-hours", "aria-label": "Backtest window" },
        HOURS.map((h) => el("option", { value: String(h), selected: h === 24 }, h < 48 ? `last ${h} h` : `last ${h / 24} days`)));
      const validate = el("button", { type: "button", id: "rules-validate" }, "Validate");
      const backtest = el("button", { type: "button", id: "rules-backtest" }, "Backtest");
      const activate = el("button", { type: "button", id: "rules-activate", class: "primary" }, "Activate");
      const shadow = el("button", { type: "button", id: "rules-activate-shadow", title: "Rules not in force yet go in shadow: their hits are recorded without affecting decisions" }, "Activate, new rules in shadow");
      const reload = el("button", { type: "button", id: "rules-load" }, "Load rules in force");
      const buttons = [validate, backtest, activate, shadow, reload];
      const enable = () => {
        for (const b of buttons) b.disabled = false;
        if (!admin) {
          for (const b of [activate, shadow]) { b.disabled = true; b.title = "Only an admin activates rules"; }
        }
      };

      validate.addEventListener("click", () => act("Validating", async () => {
        clearErrors();
        const r = await api.post("/v1/rules/validate", { source: editor.value }, ctx.signal);
        say(`Valid: ${r.rules} rules.`, "ok");
      }));
      backtest.addEventListener("click", () => act(`Backtesting over the ${hours.selectedOptions[0].textContent}`, async () => {
        clearErrors();
        const r = await api.post("/v1/rules/backtest", { source: editor.value, hours: Number(hours.value) }, ctx.signal);
        results.replaceChildren(backtestView(r));
        say(`Backtest done in ${fmt.count(r.elapsed_ms)} ms.`, "ok");
      }));
      const activateWith = (mode) => act("Activating", async () => {
        clearErrors();
        const body = { source: editor.value };
        if (mode) body.new_rules_mode = mode;
        const r = await api.put("/v1/rules", body, ctx.signal);
        await refresh();
        await loadSource();
        say(r.changed ? `Version ${r.version} in force: ${r.rules} rules.` : `Already in force (version ${r.version}).`, "ok");
      });
      activate.addEventListener("click", () => activateWith(null));
      shadow.addEventListener("click", () => activateWith("shadow"));
      reload.addEventListener("click", () => act("Loading", loadSource));
      editor.text.addEventListener("input", () => { if (errorList.childElementCount) editor.unmark(); });
      editor.text.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); validate.click(); }
      });
      enable();

      root.append(
        el("section", { class: "panel" }, el("h2", {}, "Rules in force"), summary,
          el("div", { class: "scroll rules-table-wrap" }, table.root)),
        el("section", { class: "panel" }, el("h2", {}, "Edit"),
          el("div", { class: "toolbar" }, validate, hours, backtest, activate, shadow, reload),
          status, errorList, editor.root,
          el("p", { class: "muted" }, "Ctrl+Enter validates. Conditions use the features of ",
            el("a", { href: "/v1/features", target: "_blank", rel: "noopener" }, "the catalog"), ".")),
        el("section", { class: "panel" }, el("h2", {}, "Backtest"), results));

      await Promise.all([refresh(), loadSource()]);
      ctx.every(REFRESH_MS, () => refresh().catch(failed));
    },
  });
})();
