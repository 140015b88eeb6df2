// The live page: the stream of decisions this node stores, counters of the last second, and
// charts of the last ten minutes (transactions/s, decisions by kind, fraud rate, value blocked,
// p50/p99 engine latency, replication lag per peer site).
//
// Where the filters apply: on the server. Changing the decision, store or amount filter
// reconnects /v1/stream/transactions with the filter in its query. At 100,000 transactions a
// minute the server sends a sample (at most 50 rows per quarter second, flagged rows first);
// filtering that sample in the browser would show only a few of the rows asked for, while the
// server filters before it samples, so "block" shows the blocks. Counters and charts come
// from the per-second statistics frames, which are exact and unaffected by filters.
//
// Bounded for a day of traffic: the table keeps at most MAX_ROWS rows and reuses the oldest
// row's elements for the newest (nothing is created once it is full); chart series are
// fixed-length arrays of WINDOW seconds, shifted by one each second; while paused, incoming
// rows are counted and dropped, not buffered.
"use strict";

(() => {
  const MAX_ROWS = 200;
  const WINDOW = 600;
  const DECISIONS = ["approve", "review", "challenge", "block"];
  const COLOURS = { approve: "#2e7d32", review: "#b26a00", challenge: "#7b3fb3", block: "#c62828" };
  const PEER_COLOURS = ["#2457c5", "#00838f", "#6d4c41", "#ad1457", "#558b2f", "#5e35b1"];

  /** The query string of the stream for the current filter controls. */
  function streamQuery(f) {
    const q = new URLSearchParams();
    if (f.decision) q.set("decision", f.decision);
    if (f.store) q.set("store", f.store);
    if (f.min) q.set("min_amount", f.min);
    if (f.max) q.set("max_amount", f.max);
    const s = q.toString();
    return s ? `?${s}` : "";
  }

  /** One feed row's elements, made once and refilled for every transaction it shows. */
  function makeRow() {
    const cells = {};
    const tr = RF.el("tr");
    for (const name of ["time", "id", "kind", "amount", "where", "card", "decision", "score", "reason", "us", "site"]) {
      const cls = ["amount", "score", "us"].includes(name) ? "num" : name === "id" || name === "card" ? "mono" : undefined;
      cells[name] = RF.el("td", { class: cls });
      tr.append(cells[name]);
    }
    return { tr, cells };
  }

  function fillRow(r, tx) {
    const c = r.cells;
    r.tr.className = tx.decision === "block" ? "blocked" : "";
    r.tr.dataset.decision = tx.decision;
    r.tr.dataset.id = tx.transaction_id;
    c.time.textContent = RF.fmt.time(tx.decided_at || tx.timestamp).slice(11);
    c.id.replaceChildren(RF.el("a", { href: `#/investigate/transaction/${encodeURIComponent(tx.transaction_id)}` }, tx.transaction_id));
    c.kind.textContent = tx.kind;
    c.amount.textContent = `${RF.fmt.money(tx.amount)}${tx.currency ? ` ${tx.currency}` : ""}`;
    c.where.textContent = [tx.store_id, tx.merchant].filter(Boolean).join(" · ");
    c.card.replaceChildren(tx.card ? RF.entityLink("card", tx.card) : "");
    c.decision.replaceChildren(RF.fmt.decision(tx.decision));
    c.score.textContent = RF.fmt.score(tx.score);
    c.reason.textContent = tx.reason || "";
    // 0: decided by another node of the shared state, whose engine time is not known here.
    c.us.textContent = tx.processing_us ? RF.fmt.us(tx.processing_us) : "—";
    c.site.textContent = tx.site ? `${tx.site}${tx.replicated ? " ↩" : ""}` : "";
  }

  /** A card showing one current value. */
  function card(key, label) {
    const value = RF.el("div", { class: "value", dataset: { card: key } }, "–");
    return { node: RF.el("div", { class: "card" }, RF.el("div", { class: "label" }, label), value), value };
  }

  /** Fixed-length chart data: x (unix seconds) and one array per series, WINDOW long. */
  function series(n) {
    const now = Math.floor(Date.now() / 1000);
    const data = [Array.from({ length: WINDOW }, (_, i) => now - WINDOW + i)];
    for (let i = 0; i < n; i++) data.push(new Array(WINDOW).fill(null));
    return data;
  }

  /** Moves every series one second on, with `values` (one per series) at `second`. */
  function push(data, second, values) {
    data[0].shift();
    data[0].push(second);
    for (let i = 1; i < data.length; i++) {
      data[i].shift();
      data[i].push(values[i - 1] === undefined ? null : values[i - 1]);
    }
  }

  function chartPanel(title) {
    const target = RF.el("div", { class: "live-chart" });
    const panel = RF.el("div", { class: "panel" }, RF.el("h2", {}, title), target);
    return { panel, target };
  }

  function makeChart(target, data, labels, colours, valueFmt) {
    const width = Math.max(280, target.clientWidth || 420);
    const opts = {
      width,
      height: 170,
      legend: { live: false },
      cursor: { show: false },
      scales: { x: { time: true } },
      axes: [{}, { size: 60, values: (u, ticks) => ticks.map(valueFmt) }],
      series: [{}, ...labels.map((label, i) => ({ label, stroke: colours[i], width: 1.5, points: { show: false }, spanGaps: false }))],
    };
    return new uPlot(opts, data, target);
  }

  RF.page("live", {
    title: "Live",
    async mount(root, route, ctx) {
      const filter = {
        decision: route.query.get("decision") || "",
        store: route.query.get("store") || "",
        min: route.query.get("min_amount") || "",
        max: route.query.get("max_amount") || "",
      };

      // Toolbar: pause, filters, connection state.
      let paused = false;
      let missed = 0;
      const pause = RF.el("button", { id: "live-pause", type: "button" }, "Pause");
      const status = RF.el("span", { id: "live-status", class: "muted" }, "connecting…");
      const sampled = RF.el("span", { id: "live-sampled", class: "muted" });
      const decision = RF.el("select", { id: "live-decision", "aria-label": "Decision" },
        RF.el("option", { value: "" }, "All decisions"),
        RF.el("option", { value: "review,challenge,block" }, "Flagged (review, challenge, block)"),
        ...DECISIONS.map((d) => RF.el("option", { value: d }, d)));
      decision.value = filter.decision;
      const storeList = RF.el("datalist", { id: "live-store-list" });
      const store = RF.el("input", { id: "live-store", list: "live-store-list", placeholder: "Store", size: 12, value: filter.store, "aria-label": "Store" });
      const min = RF.el("input", { id: "live-min", type: "number", min: "0", step: "any", placeholder: "Min amount", value: filter.min, "aria-label": "Minimum amount" });
      const max = RF.el("input", { id: "live-max", type: "number", min: "0", step: "any", placeholder: "Max amount", value: filter.max, "aria-label": "Maximum amount" });
      const filterError = RF.el("span", { id: "live-filter-error", class: "error" });
      root.append(RF.el("div", { class: "toolbar" }, pause, decision, store, storeList, min, max, filterError, status, sampled));

      // Cards: the last finished second.
      const cards = {
        tps: card("tps", "Transactions / s"),
        alerts: card("alerts", "Alerts / s"),
        rate: card("alert_rate", "Fraud rate (alerts)"),
        blockRate: card("block_rate", "Block rate"),
        blocked: card("value_blocked", "Value blocked / min"),
        p50: card("p50", "Engine p50"),
        p99: card("p99", "Engine p99"),
        fraud: card("confirmed_fraud", "Confirmed fraud (10 min)"),
      };
      root.append(RF.el("div", { class: "cards" }, Object.values(cards).map((c) => c.node)));

      // Charts.
      const panels = {
        tps: chartPanel("Transactions / s"),
        decisions: chartPanel("Decisions by kind / s"),
        rate: chartPanel("Fraud rate"),
        blocked: chartPanel("Value blocked / s"),
        latency: chartPanel("Engine latency"),
        lag: chartPanel("Replication lag per peer"),
      };
      panels.lag.panel.hidden = true;
      root.append(RF.el("div", { class: "grid live-charts" }, Object.values(panels).map((p) => p.panel)));

      // The feed.
      const tbody = RF.el("tbody", { id: "live-rows" });
      const table = RF.el("table", { id: "live-feed" },
        RF.el("thead", {}, RF.el("tr", {}, ["Time", "Transaction", "Kind", "Amount", "Store · merchant", "Card", "Decision", "Score", "Top reason", "Engine", "Site"]
          .map((h, i) => RF.el("th", { class: [3, 7, 9].includes(i) ? "num" : undefined }, h)))),
        tbody);
      root.append(RF.el("div", { class: "panel" }, RF.el("h2", {}, "Feed ", RF.el("span", { id: "live-count", class: "muted" })), RF.el("div", { class: "scroll live-feed" }, table)));
      const rows = []; // newest first, at most MAX_ROWS, elements reused
      let shown = 0;
      function addRow(tx) {
        let r;
        if (rows.length < MAX_ROWS) {
          r = makeRow();
        } else {
          r = rows.pop();
        }
        fillRow(r, tx);
        tbody.insertBefore(r.tr, tbody.firstChild);
        rows.unshift(r);
        shown++;
      }

      // Chart data, filled from the history first so charts are full at page load.
      const data = {
        tps: series(1),
        decisions: series(4),
        rate: series(2),
        blocked: series(1),
        latency: series(2),
      };
      const pct = (v) => `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`;
      const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
      const plain = (v) => compact.format(v);
      const charts = {
        tps: makeChart(panels.tps.target, data.tps, ["tx/s"], ["#2457c5"], plain),
        decisions: makeChart(panels.decisions.target, data.decisions, DECISIONS, DECISIONS.map((d) => COLOURS[d]), plain),
        rate: makeChart(panels.rate.target, data.rate, ["alerts / tx", "blocks / tx"], [COLOURS.review, COLOURS.block], pct),
        blocked: makeChart(panels.blocked.target, data.blocked, ["value blocked"], [COLOURS.block], plain),
        latency: makeChart(panels.latency.target, data.latency, ["p50 µs", "p99 µs"], ["#2457c5", "#c62828"], (v) => RF.fmt.us(v)),
      };
      let lag = null; // { peers, data, chart } once a peer is seen
      // uPlot listens on the window for pixel-ratio changes until an instance is destroyed:
      // charts left alive would keep this whole page (thousands of nodes) after the analyst
      // moves on, once per visit (seen by scripts/soak-dashboard).
      ctx.signal.addEventListener("abort", () => {
        for (const c of Object.values(charts)) c.destroy();
        if (lag) lag.chart.destroy();
      });
      let lastSecond = 0;
      const recent = []; // the last 60 seconds (value blocked / min, fraud over 10 min uses all)
      let confirmed = new Array(WINDOW).fill(0);

      function lagChart(peers) {
        if (lag && lag.peers.join("\n") === peers.join("\n")) return lag;
        if (lag) lag.chart.destroy();
        panels.lag.target.replaceChildren();
        const d = series(peers.length);
        panels.lag.panel.hidden = false;
        const chart = makeChart(panels.lag.target, d, peers.map((p) => `${p} ms`), peers.map((_, i) => PEER_COLOURS[i % PEER_COLOURS.length]), (v) => `${v} ms`);
        lag = { peers, data: d, chart };
        return lag;
      }

      function addSecond(s) {
        if (s.second <= lastSecond) return; // seen (a reconnect resends nothing, but be safe)
        lastSecond = s.second;
        const d = s.decisions;
        const lat = s.latency_us;
        push(data.tps, s.second, [s.transactions]);
        push(data.decisions, s.second, DECISIONS.map((k) => d[k]));
        push(data.rate, s.second, s.transactions ? [s.alert_rate, s.block_rate] : [null, null]);
        push(data.blocked, s.second, [s.value_blocked]);
        push(data.latency, s.second, lat ? [lat.p50, lat.p99] : [null, null]);
        confirmed.shift();
        confirmed.push(s.confirmed_fraud);
        recent.push(s.value_blocked);
        if (recent.length > 60) recent.shift();
        const peers = (s.replication || []).map((p) => p.peer);
        panels.lag.panel.hidden = peers.length === 0;
        if (peers.length) {
          const l = lagChart(peers);
          push(l.data, s.second, s.replication.map((p) => (p.lag_ms === null ? null : p.lag_ms)));
        }
        cards.tps.value.textContent = RF.fmt.count(s.transactions);
        cards.alerts.value.textContent = RF.fmt.count(s.alerts);
        cards.rate.value.textContent = RF.fmt.pct(s.alert_rate);
        cards.blockRate.value.textContent = RF.fmt.pct(s.block_rate);
        cards.blocked.value.textContent = RF.fmt.money(recent.reduce((a, b) => a + b, 0));
        cards.p50.value.textContent = lat ? RF.fmt.us(lat.p50) : "–";
        cards.p99.value.textContent = lat ? RF.fmt.us(lat.p99) : "–";
        cards.fraud.value.textContent = RF.fmt.count(confirmed.reduce((a, b) => a + b, 0));
      }

      function redraw() {
        for (const k of Object.keys(charts)) charts[k].setData(data[k]);
        if (lag && !panels.lag.panel.hidden) lag.chart.setData(lag.data);
      }

      // The history, then the stream.
      try {
        const h = await RF.api.get("/v1/live/stats?seconds=600", ctx.signal);
        for (const s of h.seconds) addSecond(s);
      } catch (e) {
        if (e.name === "AbortError") return;
        RF.banner(`Statistics unavailable: ${e.message}`);
      }
      redraw();

      let omittedLastSecond = 0;
      let omittedThisSecond = 0;
      const countLabel = root.querySelector("#live-count");
      function showCount() {
        countLabel.textContent = paused
          ? `paused · ${RF.fmt.count(missed)} new not shown`
          : `${RF.fmt.count(Math.min(shown, MAX_ROWS))} newest`;
      }
      showCount();

      function onMessage(m) {
        if (m.type === "tx") {
          omittedThisSecond += m.omitted || 0;
          if (paused) {
            missed += m.items.length;
          } else {
            for (const tx of m.items) addRow(tx);
          }
          showCount();
        } else if (m.type === "stats") {
          addSecond(m);
          omittedLastSecond = omittedThisSecond;
          omittedThisSecond = 0;
          sampled.textContent = omittedLastSecond ? `sampled: ${RF.fmt.count(omittedLastSecond)} rows left out in the last second` : "";
          redraw();
        }
      }

      let socket = null;
      function connect() {
        if (socket) socket.close();
        status.textContent = "connecting…";
        socket = ctx.socket(`/v1/stream/transactions${streamQuery(filter)}`, onMessage, (state) => {
          status.textContent = state === "open" ? "● live" : "reconnecting…";
          status.className = state === "open" ? "live-on" : "muted";
        });
      }

      // Checks can overlap (typing a min then a max checks twice, once per field left) and
      // their answers can arrive in any order: only the newest check's answer is applied, so
      // an older one cannot clear the newer one's error or connect with an outdated filter.
      let check = 0;

      function clearFilterError() {
        filterError.textContent = "";
        for (const input of [store, min, max]) input.classList.remove("line-error");
      }

      /** Checks a filter on the server (a 400 names the field) before reconnecting with it. */
      async function applyFilter() {
        const mine = ++check;
        const next = { decision: decision.value, store: store.value.trim(), min: min.value.trim(), max: max.value.trim() };
        if (JSON.stringify(next) === JSON.stringify(filter)) {
          clearFilterError();
          return;
        }
        try {
          // The stream answers a plain request with 400 for a bad filter, and for a good one
          // with 400 on the missing upgrade: only the field tells them apart.
          await RF.api.get(`/v1/stream/transactions${streamQuery(next)}`, ctx.signal);
        } catch (e) {
          if (e.name === "AbortError" || mine !== check) return;
          clearFilterError();
          if (e.field && e.field !== "upgrade") {
            filterError.textContent = e.message;
            const input = { store, min_amount: min, max_amount: max }[e.field];
            if (input) input.classList.add("line-error");
            return;
          }
        }
        if (mine !== check) return;
        clearFilterError();
        Object.assign(filter, next);
        history.replaceState(null, "", `#/live${streamQuery(filter)}`);
        // Rows shown so far followed the old filter.
        for (const r of rows) r.tr.remove();
        rows.length = 0;
        shown = 0;
        showCount();
        connect();
      }
      for (const input of [decision, store, min, max]) input.addEventListener("change", applyFilter);

      pause.addEventListener("click", () => {
        paused = !paused;
        pause.textContent = paused ? "Resume" : "Pause";
        pause.classList.toggle("primary", paused);
        missed = 0;
        showCount();
      });

      // The stores seen lately, for the store filter's suggestions.
      async function loadStores() {
        try {
          const s = await RF.api.get("/v1/stores", ctx.signal);
          storeList.replaceChildren(...s.stores.slice(0, 200).map((x) => RF.el("option", { value: x.store_id })));
        } catch (_) { /* suggestions only */ }
      }
      loadStores();
      ctx.every(30_000, loadStores);

      // Charts follow the page's width.
      let width = 0;
      ctx.every(1000, () => {
        const w = panels.tps.target.clientWidth;
        if (w && Math.abs(w - width) > 4) {
          width = w;
          for (const c of Object.values(charts)) c.setSize({ width: w, height: 170 });
          if (lag) lag.chart.setSize({ width: w, height: 170 });
        }
      });

      connect();
    },
  });
})();
