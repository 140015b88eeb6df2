// The stores page: the stores seen in the latest records side by side, one column each, with
// their recent purchases and returns (the till's photo, the photo check's outcome, the
// decision; blocked returns highlighted), and at the top this site's replication links.
//
// Refreshed every REFRESH ms. Bounded: at most MAX_STORES columns of at most PER_STORE
// transactions; a column is kept per store and its list rebuilt only when its transactions
// changed, so photos are not fetched again (they are served immutable, cached anyway).
"use strict";

(() => {
  const REFRESH = 5000;
  const MAX_STORES = 8;
  const PER_STORE = 20;

  const PHOTO_TEXT = {
    verified: "face verified",
    no_face: "no face",
    poor_quality: "poor photo",
    unreadable: "unreadable photo",
    missing: "no photo",
  };

  function photoOutcome(tx) {
    if (!tx.photo) return RF.el("span", { class: "muted" }, "—");
    const bad = tx.photo !== "verified";
    return RF.el("span", { class: `stores-photo-outcome ${bad ? "bad" : "ok"}`, dataset: { photo: tx.photo } }, PHOTO_TEXT[tx.photo] || tx.photo);
  }

  /** One purchase or return in a store's column. */
  function entry(tx) {
    const blocked = tx.decision === "block";
    const photo = tx.photo_ref
      ? RF.el("img", { class: "photo", src: `/v1/photos/${encodeURIComponent(tx.photo_ref)}`, alt: `photo of ${tx.transaction_id}`, loading: "lazy" })
      : RF.el("div", { class: "stores-nophoto muted" }, "no photo");
    const items = (tx.items || []).map((i) => `${i.quantity || 1}× ${i.sku || i.serial || "item"}`).join(", ");
    return RF.el("li", {
      class: `stores-tx ${tx.kind}${blocked ? " blocked" : ""}`,
      dataset: { id: tx.transaction_id, kind: tx.kind, decision: tx.decision },
    },
    photo,
    RF.el("div", { class: "stores-tx-body" },
      RF.el("div", {}, RF.el("strong", {}, tx.kind), " ", RF.fmt.decision(tx.decision), " ",
        RF.el("span", { class: "num" }, RF.fmt.money(tx.amount)), " ",
        RF.el("span", { class: "muted" }, `score ${RF.fmt.score(tx.score)}`)),
      RF.el("div", { class: "muted" }, RF.fmt.time(tx.timestamp)),
      RF.el("div", {},
        tx.receipt_id ? ["receipt ", RF.entityLink("receipt", tx.receipt_id), " "] : "",
        tx.customer_id ? ["· customer ", RF.el("span", { class: "mono" }, tx.customer_id), " "] : "",
        tx.terminal_id ? ["· till ", tx.terminal_id] : ""),
      items ? RF.el("div", { class: "muted" }, items) : "",
      RF.el("div", {}, photoOutcome(tx), " ",
        RF.el("a", { href: `#/investigate/transaction/${encodeURIComponent(tx.transaction_id)}`, class: "mono" }, tx.transaction_id))));
  }

  /** A store's column: made once, its counts and list refreshed. */
  function column(storeId) {
    const counts = RF.el("div", { class: "muted stores-counts" });
    const list = RF.el("ul", { class: "stores-list" });
    const node = RF.el("section", { class: "panel stores-col", dataset: { store: storeId } },
      RF.el("h2", {}, RF.entityLink("store", storeId)), counts, list);
    return { node, counts, list, key: "" };
  }

  function linksTable(status) {
    if (!status.peers.length) return RF.el("p", { class: "muted" }, `Site ${status.site}: no peer sites.`);
    return RF.el("table", { id: "stores-links" },
      RF.el("thead", {}, RF.el("tr", {}, ["Peer", "Link", "Behind", "Lag (last)", "Lag p99", "Replicated", "Conflicts", "Last contact"]
        .map((h, i) => RF.el("th", { class: i >= 2 && i <= 6 ? "num" : undefined }, h)))),
      RF.el("tbody", {}, status.peers.map((p) => RF.el("tr", { class: p.connected ? "" : "blocked", dataset: { peer: p.site || p.url } },
        RF.el("td", {}, p.site || p.url),
        RF.el("td", {}, p.connected ? "connected" : `down${p.last_error ? `: ${p.last_error}` : ""}`),
        RF.el("td", { class: "num" }, RF.fmt.count(p.behind)),
        RF.el("td", { class: "num" }, p.lag_ms.last === null ? "—" : `${p.lag_ms.last.toFixed(1)} ms`),
        RF.el("td", { class: "num" }, p.lag_ms.p99 === null ? "—" : `${p.lag_ms.p99.toFixed(1)} ms`),
        RF.el("td", { class: "num" }, RF.fmt.count(p.records)),
        RF.el("td", { class: "num" }, RF.fmt.count(p.conflicts)),
        RF.el("td", {}, RF.fmt.time(p.last_contact))))));
  }

  RF.page("stores", {
    title: "Stores",
    async mount(root, route, ctx) {
      const links = RF.el("div", { id: "stores-replication" }, RF.el("p", { class: "muted" }, "…"));
      const note = RF.el("p", { class: "muted", id: "stores-note" });
      const row = RF.el("div", { class: "stores-row", id: "stores-columns" });
      root.append(RF.el("div", { class: "panel" }, RF.el("h2", {}, "Replication"), links), note, row);
      const columns = new Map();

      async function refreshLinks() {
        try {
          links.replaceChildren(linksTable(await RF.api.get("/v1/sites", ctx.signal)));
        } catch (e) {
          if (e.name === "AbortError") return;
          links.replaceChildren(RF.el("p", { class: "muted" }, e.status === 404 ? "This node is not a site (serve --site NAME --peer URL replicates between stores)." : `Unavailable: ${e.message}`));
        }
      }

      async function refreshStore(c, s) {
        c.counts.textContent = `${RF.fmt.count(s.purchases)} purchases · ${RF.fmt.count(s.returns)} returns · ${RF.fmt.count(s.blocked)} blocked (of the latest records)`;
        const r = await RF.api.get(`/v1/stores/${encodeURIComponent(s.store_id)}/transactions?limit=${PER_STORE}`, ctx.signal);
        const txs = r.transactions.filter((t) => t.kind === "purchase" || t.kind === "return");
        const key = txs.map((t) => `${t.transaction_id}:${t.decision}`).join(",");
        if (key === c.key) return;
        c.key = key;
        c.list.replaceChildren(...(txs.length ? txs.map(entry) : [RF.el("li", { class: "muted" }, "No purchases or returns yet.")]));
      }

      async function refresh() {
        let stores;
        try {
          stores = (await RF.api.get("/v1/stores", ctx.signal)).stores;
        } catch (e) {
          if (e.name !== "AbortError") note.textContent = `Stores unavailable: ${e.message}`;
          return;
        }
        // The busiest stores of the latest records, shown by name.
        const shown = stores
          .slice()
          .sort((a, b) => b.transactions - a.transactions)
          .slice(0, MAX_STORES)
          .sort((a, b) => a.store_id.localeCompare(b.store_id));
        note.textContent = stores.length === 0
          ? "No store has transactions among the latest records yet."
          : stores.length > MAX_STORES ? `The ${MAX_STORES} busiest of ${stores.length} stores.` : "";
        const keep = new Set(shown.map((s) => s.store_id));
        for (const [id, c] of columns) {
          if (!keep.has(id)) { c.node.remove(); columns.delete(id); }
        }
        shown.forEach((s) => {
          let c = columns.get(s.store_id);
          if (!c) { c = column(s.store_id); columns.set(s.store_id, c); }
          row.append(c.node); // in order
        });
        await Promise.all(shown.map((s) => refreshStore(columns.get(s.store_id), s).catch((e) => {
          if (e.name !== "AbortError") note.textContent = `Store ${s.store_id}: ${e.message}`;
        })));
      }

      await Promise.all([refreshLinks(), refresh()]);
      ctx.every(REFRESH, () => Promise.all([refreshLinks(), refresh()]));
    },
  });
})();
