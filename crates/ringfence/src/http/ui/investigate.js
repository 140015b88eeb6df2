// The investigate page: search results (#/investigate?q=...), a transaction
// (#/investigate/transaction/<id>) and an entity page (#/investigate/<type>/<id>) with its
// risk profile, feature values, history and link graph.
//
// The graph (Cytoscape.js) starts from the entity's 1-hop neighbourhood (GET /v1/graph).
// Tapping a node expands it: its own neighbourhood is fetched and merged in, then laid out
// again. Double-tapping a node, or "Open" with a node selected, opens that entity's page.
// Nodes labelled fraud are drawn red. The graph holds at most MAX_NODES nodes, whatever the
// analyst expands, and the Cytoscape instance is destroyed when the page is left.
"use strict";

(() => {
  const { el, fmt, api } = RF;
  /** Most nodes the graph holds. */
  const MAX_NODES = 300;
  /** Nodes asked for per expansion. */
  const PER_EXPAND = 60;
  const COLOURS = { user: "#2457c5", card: "#2e7d32", device: "#7b3fb3", ip: "#b26a00" };

  function kv(pairs) {
    return el("dl", { class: "kv" }, ...pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
      .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function searchForm(q) {
    const input = el("input", { id: "investigate-q", type: "search", value: q || "", placeholder: "Transaction, card, user, device, ip, store, merchant, receipt", size: 48 });
    return el("form", { class: "toolbar", onsubmit: (ev) => {
      ev.preventDefault();
      RF.search(input.value.trim());
    } }, input, el("button", { type: "submit", class: "primary" }, "Search"));
  }

  async function mountSearch(root, q, ctx) {
    root.append(el("section", { class: "panel" }, el("h2", {}, "Investigate"), searchForm(q)));
    if (!q) {
      root.append(el("p", { class: "muted" }, "Search for anything seen in a transaction. A card number is hashed with the node's card key before it is looked up."));
      return;
    }
    const out = el("section", { class: "panel", id: "search-results" });
    root.append(out);
    try {
      const r = await api.get(`/v1/search?q=${encodeURIComponent(q)}`, ctx.signal);
      const rows = r.results.map((h) => el("tr", { class: "clickable", dataset: { type: h.type, id: h.id },
        onclick: () => RF.go(`#/investigate/${encodeURIComponent(h.type)}/${encodeURIComponent(h.id)}`) },
      el("td", {}, h.type), el("td", { class: "mono" }, h.id),
      el("td", { class: "num" }, `${fmt.count(h.transactions)}${h.more ? "+" : ""}`), el("td", {}, fmt.time(h.last_seen))));
      out.append(
        el("h2", {}, `Results for ${r.hashed ? "card token " + r.query : "“" + r.query + "”"}`),
        r.hashed ? el("p", { class: "muted" }, r.note) : null,
        rows.length
          ? el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Type"), el("th", {}, "Id"), el("th", { class: "num" }, "Transactions"), el("th", {}, "Last seen"))), el("tbody", {}, ...rows))
          : el("p", { class: "muted" }, "Nothing stored matches."));
    } catch (e) {
      if (e.name !== "AbortError") out.append(el("p", { class: "error" }, e.message));
    }
  }

  async function mountTransaction(root, id, ctx) {
    const r = await api.get(`/v1/transactions/${encodeURIComponent(id)}`, ctx.signal);
    const tx = r.transaction || {};
    const d = r.decision || {};
    const links = [["user", tx.user_id], ["card", tx.card_id], ["device", tx.device_id], ["ip", tx.ip],
      ["merchant", tx.merchant], ["terminal", tx.terminal_id], ["store", tx.store_id],
      ["receipt", tx.retail && tx.retail.receipt_id]].filter(([, v]) => v);
    const last = (r.labels || [])[r.labels.length - 1];
    root.append(el("section", { class: "panel" },
      el("h2", {}, "Transaction ", el("span", { class: "mono" }, tx.transaction_id)),
      kv([["Time", fmt.time(tx.timestamp)], ["Kind", tx.kind], ["Amount", fmt.money(tx.amount)],
        ["Decision", fmt.decision(d.decision)], ["Score", fmt.score(d.score)],
        ["Label", last ? (last.fraud ? "fraud" : "not fraud") : "none"],
        ...links.map(([k, v]) => [k, RF.entityLink(k, v)])]),
      el("ul", { class: "reasons" }, ...(d.reasons || []).map((x) => el("li", {}, `${x.rule}: ${x.detail}`)))));
  }

  function graphStyle() {
    return [
      { selector: "node", style: { label: "data(label)", "font-size": 10, color: "#1b1f24", "text-valign": "bottom", "text-margin-y": 3,
        "background-color": (n) => COLOURS[n.data("type")] || "#5f6b7a", width: 18, height: 18 } },
      { selector: "node[?fraud]", style: { "background-color": "#c62828", "border-color": "#7f0000", "border-width": 2 } },
      { selector: "node[?center]", style: { width: 28, height: 28 } },
      { selector: "node[?expanded]", style: { shape: "round-rectangle" } },
      { selector: "node:selected", style: { "overlay-color": "#2457c5", "overlay-opacity": 0.25, "overlay-padding": 4 } },
      { selector: "edge", style: { width: (e) => Math.min(1 + Math.log2(e.data("transactions") || 1), 6), "line-color": "#b8c2cf", "curve-style": "bezier" } },
    ];
  }

  function mountGraph(panel, type, id, ctx) {
    const container = el("div", { id: "graph", class: "graph", dataset: { nodes: "0" } });
    const count = el("span", { id: "graph-count", class: "muted" });
    const status = el("span", { class: "muted", id: "graph-status" });
    const open = el("button", { id: "graph-open", type: "button", disabled: true }, "Open selected");
    const fit = el("button", { type: "button" }, "Fit");
    panel.append(el("div", { class: "toolbar" }, open, fit, count, status,
      el("span", { class: "muted" }, "Tap a node to expand it; double-tap to open it. Red: labelled fraud.")), container);

    const cy = cytoscape({ container, elements: [], style: graphStyle(), minZoom: 0.2, maxZoom: 3, wheelSensitivity: 0.3 });
    container._cy = cy; // for the browser test
    ctx.signal.addEventListener("abort", () => cy.destroy());
    let busy = false;

    const layout = () => cy.layout({ name: "cose", animate: false, randomize: false, nodeRepulsion: () => 400000, idealEdgeLength: () => 90, nodeOverlap: 20, numIter: 1500, fit: true, padding: 20 }).run();
    const show = () => {
      count.textContent = `${cy.nodes().length} node(s), ${cy.edges().length} link(s)${cy.nodes().length >= MAX_NODES ? " (cap reached)" : ""}`;
      container.dataset.nodes = String(cy.nodes().length);
    };

    async function expand(nodeType, nodeId) {
      if (busy) return;
      busy = true;
      status.textContent = `expanding ${nodeType} ${nodeId}…`;
      try {
        const g = await api.get(`/v1/graph/${encodeURIComponent(nodeType)}/${encodeURIComponent(nodeId)}?limit=${PER_EXPAND}`, ctx.signal);
        if (!ctx.live) return;
        const added = [];
        // New nodes start on a ring around the node they came from, so the layout unfolds
        // them from there instead of from one point.
        const from = cy.getElementById(g.center);
        const origin = from.nonempty() ? from.position() : { x: 0, y: 0 };
        const spread = Math.max(g.nodes.length, 1);
        for (const n of g.nodes) {
          const existing = cy.getElementById(n.id);
          if (existing.nonempty()) {
            if (n.fraud) existing.data("fraud", true);
            continue;
          }
          if (cy.nodes().length + added.length >= MAX_NODES) break;
          const angle = (2 * Math.PI * added.length) / spread;
          added.push({ group: "nodes", data: { id: n.id, type: n.type, label: n.label, fraud: n.fraud, alerts: n.alerts },
            position: { x: origin.x + 80 * Math.cos(angle), y: origin.y + 80 * Math.sin(angle) } });
        }
        const has = (nid) => cy.getElementById(nid).nonempty() || added.some((a) => a.data.id === nid);
        for (const e of g.edges) {
          const eid = `${e.source}|${e.target}`;
          if (cy.getElementById(eid).nonempty() || !has(e.source) || !has(e.target)) continue;
          added.push({ group: "edges", data: { id: eid, source: e.source, target: e.target, transactions: e.transactions } });
        }
        cy.add(added);
        cy.getElementById(g.center).data("expanded", true);
        if (added.length) layout();
        status.textContent = g.truncated ? "some links were left out (the node has many)" : "";
        show();
      } catch (e) {
        if (e.name !== "AbortError") status.textContent = e.message;
      } finally {
        busy = false;
      }
    }

    cy.on("tap", "node", (ev) => {
      const n = ev.target;
      open.disabled = false;
      if (!n.data("expanded")) expand(n.data("type"), n.data("label"));
    });
    cy.on("dbltap", "node", (ev) => RF.go(`#/investigate/${encodeURIComponent(ev.target.data("type"))}/${encodeURIComponent(ev.target.data("label"))}`));
    open.addEventListener("click", () => {
      const n = cy.$("node:selected").first();
      if (n.nonempty()) RF.go(`#/investigate/${encodeURIComponent(n.data("type"))}/${encodeURIComponent(n.data("label"))}`);
    });
    fit.addEventListener("click", () => cy.fit(undefined, 20));
    return expand(type, id).then(() => cy.getElementById(`${type}:${id}`).data("center", true));
  }

  async function mountEntity(root, type, id, ctx) {
    const e = await api.get(`/v1/entities/${encodeURIComponent(type)}/${encodeURIComponent(id)}`, ctx.signal);
    const p = e.profile || {};
    const card = (label, value, extra) => el("div", { class: `card${extra || ""}` }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
    root.append(
      el("h2", { class: "entity-title" }, `${e.type} `, el("span", { class: "mono" }, e.id)),
      el("div", { class: "cards", id: "entity-profile" },
        card("Transactions", `${fmt.count(p.transactions)}${p.capped ? "+" : ""}`),
        card("Alerts", fmt.count(p.alerts)),
        card("Labelled fraud", fmt.count(p.labelled_fraud), p.labelled_fraud ? " fraud" : ""),
        card("Labelled not fraud", fmt.count(p.labelled_legit)),
        card("First seen", fmt.time(p.first_seen)),
        card("Last seen", fmt.time(p.last_seen))));

    const graphPanel = el("section", { class: "panel" }, el("h2", {}, "Linked users, cards, devices and ips"));
    const features = Object.entries(e.features || {});
    const featurePanel = el("section", { class: "panel" }, el("h2", {}, "Feature values"),
      features.length
        ? el("div", { class: "scroll" }, el("table", { id: "entity-features" }, el("tbody", {}, ...features.map(([k, v]) =>
          el("tr", {}, el("td", { class: "mono" }, k), el("td", { class: "num" }, typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : String(v)))))))
        : el("p", { class: "muted" }, "The engine keeps no features for this kind (or holds no state for it now)."));
    const linked = e.linked || {};
    const linkedPanel = el("section", { class: "panel" }, el("h2", {}, "Linked"),
      ...["users", "cards", "devices", "ips"].filter((k) => (linked[k] || []).length).map((k) =>
        el("p", {}, el("span", { class: "muted" }, `${k}: `), ...linked[k].flatMap((v, i) => [i ? ", " : "", RF.entityLink(k.slice(0, -1), v)]))));
    const history = el("section", { class: "panel" }, el("h2", {}, "History"),
      el("div", { class: "scroll" }, el("table", { id: "entity-history" },
        el("thead", {}, el("tr", {}, ...["Time", "Transaction", "Kind", "Amount", "Decision", "Score", "Label"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...(e.recent_transactions || []).map((t) => el("tr", { class: t.label === "fraud" ? "blocked" : undefined },
          el("td", {}, fmt.time(t.timestamp)),
          el("td", { class: "mono" }, el("a", { href: `#/investigate/transaction/${encodeURIComponent(t.transaction_id)}` }, t.transaction_id)),
          el("td", {}, t.kind || ""), el("td", { class: "num" }, fmt.money(t.amount)), el("td", {}, fmt.decision(t.decision)),
          el("td", { class: "num" }, fmt.score(t.score)), el("td", {}, t.label || "")))))));
    root.append(graphPanel, el("div", { class: "grid" }, history, featurePanel, linkedPanel));
    if (typeof cytoscape === "function") await mountGraph(graphPanel, e.type, e.id, ctx);
    else graphPanel.append(el("p", { class: "error" }, "The graph library did not load."));
  }

  RF.page("investigate", {
    title: "Investigate",
    mount(root, route, ctx) {
      const [type, ...rest] = route.parts;
      if (!type) return mountSearch(root, route.query.get("q"), ctx);
      const id = rest.join("/");
      root.prepend(el("p", {}, el("a", { href: "#/investigate" }, "← Search")));
      if (type === "transaction") return mountTransaction(root, id, ctx);
      return mountEntity(root, type, id, ctx);
    },
  });
})();
