// The alerts page: the queue of cases (#/alerts) and one case (#/alerts/<id>).
//
// The queue is the server's order (GET /v1/cases: untaken work first, then the riskiest, then
// the newest), refreshed every few seconds. Rows are kept by case id and updated in place, and
// at most QUEUE_ROWS are shown, so a queue left open all day holds the same few elements.
// The case view shows why the engine alerted (rule hits with their points, the model's score
// and the features that pushed it), the transaction with links to its entities, the label,
// the audit trail, and the analyst's actions; every answer of the API, errors included, is
// shown on the page.
"use strict";

(() => {
  const { el, fmt, api } = RF;
  /** Rows the queue shows (and keeps in the DOM). */
  const QUEUE_ROWS = 100;
  /** How often the queue refreshes. */
  const REFRESH_MS = 4000;

  const statusBadge = (s) => el("span", { class: `badge case-${s || "open"}` }, s || "open");

  function mountQueue(root, route, ctx) {
    const status = el("select", { id: "alerts-status", "aria-label": "Status" },
      ...[["", "All"], ["open", "Open"], ["assigned", "Assigned"], ["closed", "Closed"]]
        .map(([v, t]) => el("option", { value: v }, t)));
    const sort = el("select", { id: "alerts-sort", "aria-label": "Order" },
      ...[["priority", "Priority"], ["newest", "Newest"], ["risk", "Risk"]]
        .map(([v, t]) => el("option", { value: v }, t)));
    status.value = route.query.get("status") || "";
    sort.value = route.query.get("sort") || "priority";
    const info = el("span", { class: "muted", id: "alerts-info" });
    const error = el("p", { class: "error", id: "alerts-error", role: "alert" });
    const body = el("tbody");
    const table = el("table", { id: "alerts-queue" },
      el("thead", {}, el("tr", {},
        ...["Case", "Time", "Decision", "Score", "Category", "Account", "Amount", "Status", "Assignee"]
          .map((h, i) => el("th", { class: i === 3 || i === 6 ? "num" : undefined }, h)))),
      body);
    root.append(el("section", { class: "panel" },
      el("h2", {}, "Alert queue"),
      el("div", { class: "toolbar" }, el("label", {}, "Status ", status), el("label", {}, "Order ", sort), info),
      error,
      el("div", { class: "scroll queue-scroll" }, table)));

    const rows = new Map(); // case id -> { tr, cells }
    function row(c) {
      let r = rows.get(c.id);
      if (!r) {
        const cells = Array.from({ length: 9 }, (_, i) => el("td", { class: i === 3 || i === 6 ? "num" : undefined }));
        const tr = el("tr", { class: "clickable", dataset: { id: String(c.id) }, onclick: () => RF.go(`#/alerts/${c.id}`) }, ...cells);
        r = { tr, cells };
        rows.set(c.id, r);
      }
      const values = [
        `#${c.id}`, fmt.time(c.timestamp), fmt.decision(c.decision), fmt.score(c.score), c.category,
        c.account || "", fmt.money(c.amount), statusBadge(c.status), c.assignee || "",
      ];
      values.forEach((v, i) => r.cells[i].replaceChildren(v instanceof Node ? v : String(v)));
      r.tr.classList.toggle("blocked", c.decision === "block");
      r.tr.classList.toggle("closed", c.status === "closed");
      return r.tr;
    }

    async function refresh() {
      const q = new URLSearchParams({ limit: String(QUEUE_ROWS), sort: sort.value });
      if (status.value) q.set("status", status.value);
      try {
        const page = await api.get(`/v1/cases?${q}`, ctx.signal);
        const seen = new Set();
        const trs = page.cases.map((c) => { seen.add(c.id); return row(c); });
        for (const id of rows.keys()) if (!seen.has(id)) rows.delete(id);
        body.replaceChildren(...trs);
        info.textContent = `${page.cases.length} case(s)${page.next ? ", more below the first " + QUEUE_ROWS : ""} · refreshed ${new Date().toLocaleTimeString()}`;
        error.textContent = "";
      } catch (e) {
        if (e.name !== "AbortError") error.textContent = e.message;
      }
    }
    const reroute = () => {
      const q = new URLSearchParams();
      if (status.value) q.set("status", status.value);
      if (sort.value !== "priority") q.set("sort", sort.value);
      history.replaceState(null, "", `#/alerts${q.toString() ? "?" + q : ""}`);
      refresh();
    };
    status.addEventListener("change", reroute);
    sort.addEventListener("change", reroute);
    ctx.every(REFRESH_MS, refresh);
    return refresh();
  }

  function kv(pairs) {
    return el("dl", { class: "kv" }, ...pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
      .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function mountCase(root, id, ctx) {
    const view = el("div", { id: "case-view" });
    const error = el("p", { class: "error", id: "case-error", role: "alert" });
    root.append(el("p", {}, el("a", { href: "#/alerts" }, "← Queue")), error, view);

    async function act(path, body) {
      error.textContent = "";
      try {
        await api.post(`/v1/cases/${id}/${path}`, body, ctx.signal);
      } catch (e) {
        if (e.name === "AbortError") return;
        error.textContent = e.field ? `${e.message} (field: ${e.field})` : e.message;
      }
      await load();
    }

    function render(c) {
      const cs = c.case;
      const tx = c.transaction || {};
      const why = c.why || {};
      const note = el("textarea", { id: "case-note", rows: 2, placeholder: "Note (why this verdict)", maxlength: 2000 });
      const closed = cs.status === "closed";
      const actions = el("div", { class: "toolbar case-actions" },
        el("button", { id: "case-assign", type: "button", disabled: closed || cs.assignee === (RF.me && RF.me.name), onclick: () => act("assign") }, "Assign to me"),
        el("button", { id: "case-fraud", type: "button", class: "danger", disabled: closed,
          onclick: () => act("close", { verdict: "fraud", note: note.value || undefined }) }, "Confirm fraud"),
        el("button", { id: "case-false-positive", type: "button", class: "primary", disabled: closed,
          onclick: () => act("close", { verdict: "false_positive", note: note.value || undefined }) }, "False positive"),
        el("button", { id: "case-reopen", type: "button", disabled: !closed, onclick: () => act("reopen") }, "Reopen"));

      const header = el("section", { class: "panel" },
        el("h2", {}, `Case #${cs.id} `, statusBadge(cs.status)),
        kv([
          ["Status", el("span", { id: "case-status" }, cs.status)],
          ["Assignee", cs.assignee || "nobody"],
          ["Verdict", cs.verdict ? `${cs.verdict} by ${cs.closed_by} at ${fmt.time(cs.closed_at)}` : ""],
          ["Note", cs.note],
          ["Label", el("span", { id: "case-label", class: c.label === "fraud" ? "label-fraud" : undefined }, c.label || "none")],
          ["Alert", `${c.alert.category} · ${fmt.time(c.alert.timestamp)}`],
        ]),
        closed ? null : note,
        actions);

      const hits = el("table", { id: "case-rule-hits" },
        el("thead", {}, el("tr", {}, el("th", {}, "Rule"), el("th", {}, "Category"), el("th", { class: "num" }, "Points"), el("th", {}, "Why"))),
        el("tbody", {}, ...(why.rule_hits || []).map((r) => el("tr", {},
          el("td", { class: "mono" }, r.rule), el("td", {}, r.category), el("td", { class: "num" }, fmt.score(r.weight)),
          el("td", {}, r.detail, r.action ? el("span", { class: "muted" }, ` → ${r.action}`) : null)))));
      const model = why.model || {};
      const contributions = (model.contributions || []);
      const whyPanel = el("section", { class: "panel" },
        el("h2", {}, "Why"),
        kv([["Decision", fmt.decision(why.decision)], ["Score", fmt.score(why.score)],
          ["Model probability", model.score === null || model.score === undefined ? "no model" : fmt.pct(model.score)],
          ["Anomaly", model.anomaly_score === null || model.anomaly_score === undefined ? "" : model.anomaly_score.toFixed(3)]]),
        hits,
        contributions.length ? el("h2", {}, "Model contributions") : null,
        contributions.length ? el("table", { id: "case-contributions" },
          el("thead", {}, el("tr", {}, el("th", {}, "Feature"), el("th", { class: "num" }, "Value"), el("th", { class: "num" }, "Log-odds"), el("th", {}, "Says"))),
          el("tbody", {}, ...contributions.map((f) => el("tr", {},
            el("td", { class: "mono" }, f.feature), el("td", { class: "num" }, f.value === null ? "missing" : String(f.value)),
            el("td", { class: "num" }, (f.contribution >= 0 ? "+" : "") + Number(f.contribution).toFixed(3)), el("td", {}, f.says))))) : null,
        (why.shadow || []).length ? el("p", { class: "muted" }, `Shadow rules matched (no effect): ${why.shadow.map((r) => r.rule).join(", ")}`) : null);

      const entities = el("ul", { class: "entity-links" },
        ...(c.entities || []).map((e) => el("li", {}, el("span", { class: "muted" }, `${e.type} `), RF.entityLink(e.type, e.id))));
      const photo = c.photo && c.photo.url
        ? el("figure", {}, el("img", { class: "photo", src: c.photo.url, alt: "till photo" }), el("figcaption", {}, `photo check: ${c.photo.status}`))
        : c.photo ? el("p", {}, `Photo check: ${c.photo.status}`) : null;
      const txPanel = el("section", { class: "panel" },
        el("h2", {}, "Transaction"),
        kv([["Id", el("span", { class: "mono" }, tx.transaction_id)], ["Time", fmt.time(tx.timestamp)], ["Kind", tx.kind],
          ["Amount", `${fmt.money(tx.amount)} ${tx.currency || ""}`], ["Merchant", tx.merchant], ["Country", tx.country]]),
        el("h2", {}, "Entities"), entities, photo);

      const labels = el("ul", {}, ...(c.labels || []).map((l) => el("li", {},
        `${l.fraud ? "fraud" : "not fraud"} · ${l.source || "?"} · ${fmt.time(l.labeled_at)}${l.note ? " · " + l.note : ""}`)));
      const audit = el("table", { id: "case-audit" },
        el("thead", {}, el("tr", {}, el("th", {}, "When"), el("th", {}, "Who"), el("th", {}, "Action"), el("th", {}, "Detail"))),
        el("tbody", {}, ...(c.audit || []).map((a) => el("tr", {},
          el("td", {}, fmt.time(a.at)), el("td", {}, `${a.actor} (${a.role})`), el("td", { class: "mono" }, a.action),
          el("td", { class: "mono" }, JSON.stringify(a.detail))))));
      const trail = el("section", { class: "panel" }, el("h2", {}, "Labels"), labels, el("h2", {}, "Audit trail"), audit);

      view.replaceChildren(el("div", { class: "grid" }, header, whyPanel), el("div", { class: "grid" }, txPanel, trail));
    }

    async function load() {
      try {
        render(await api.get(`/v1/cases/${encodeURIComponent(id)}`, ctx.signal));
      } catch (e) {
        if (e.name !== "AbortError") error.textContent = e.message;
      }
    }
    return load();
  }

  RF.page("alerts", {
    title: "Alerts",
    mount(root, route, ctx) {
      if (route.parts.length) return mountCase(root, route.parts[0], ctx);
      return mountQueue(root, route, ctx);
    },
  });
})();
