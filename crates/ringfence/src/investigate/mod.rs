//! Investigate: find anything an analyst has (a transaction id, card, user, device, ip,
//! store, merchant, terminal or receipt), an entity's risk profile, and its link graph (the
//! users, cards, devices and ips that share its transactions: a fraud ring shows as one
//! connected cluster).
//!
//! # Layout
//! - this module: the types, search and the graph (plain functions over stored rows).
//! - [`sqlite`], [`postgres`]: the reads, one statement text shared by both where it can be.
//!
//! Everything here is read from stored transactions (`tx_entities`), not from the engine's
//! memory, so it reaches as far back as the store does and, in production mode, covers every
//! node's transactions.

pub mod postgres;
pub mod sqlite;

use std::collections::{BTreeMap, HashMap};

use ringfence_core::event::{Timestamp, Transaction};
use serde::Serialize;

use crate::store::{Records, StoreError};

/// Entity kinds search looks in, in the order results are listed.
pub const SEARCH_KINDS: &[&str] = &[
    "card", "user", "device", "ip", "store", "merchant", "receipt", "terminal",
];
/// Kinds drawn in the link graph: the identities a ring shares.
pub const LINK_KINDS: &[&str] = &["user", "card", "device", "ip"];
/// Entity kinds with a page (the engine's kinds, plus stores and receipts).
pub const PAGE_KINDS: &[&str] = &[
    "card", "user", "device", "ip", "merchant", "terminal", "store", "receipt",
];
/// Transactions counted per entity; above this a count is reported as capped, so a busy
/// merchant costs one bounded index range, not a scan of its whole history.
pub const COUNT_CAP: i64 = 10_000;
/// Transactions of the centre entity the graph is drawn from.
pub const GRAPH_TRANSACTIONS: u32 = 1000;
/// Most nodes one graph answer holds (the `limit` parameter's ceiling).
pub const MAX_GRAPH_NODES: usize = 300;

/// One search result.
#[derive(Clone, Debug, Serialize)]
pub struct SearchHit {
    /// `transaction` or an entity kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Stored transactions it appears in (at most [`COUNT_CAP`]).
    pub transactions: i64,
    /// The count reached [`COUNT_CAP`]: there are more.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// Event time of its latest transaction.
    pub last_seen: Option<Timestamp>,
}

/// An entity's counts over its newest [`COUNT_CAP`] transactions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EntityStats {
    /// Transactions.
    pub transactions: i64,
    /// Of them, decided above approve (each queued as an alert).
    pub alerts: i64,
    /// Of them, labelled fraud (latest label).
    pub labelled_fraud: i64,
    /// Of them, labelled not fraud.
    pub labelled_legit: i64,
    /// Earliest event time among them.
    pub first_seen: Option<Timestamp>,
    /// Latest event time.
    pub last_seen: Option<Timestamp>,
    /// The counts stopped at [`COUNT_CAP`] transactions.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub capped: bool,
}

/// A stored transaction of an entity with its decision and current label.
#[derive(Clone, Debug)]
pub struct EntityTx {
    /// Its id.
    pub transaction_id: String,
    /// Event time.
    pub timestamp: Timestamp,
    /// Amount.
    pub amount: f64,
    /// Decision taken.
    pub decision: String,
    /// Score.
    pub score: f64,
    /// Latest label: fraud (`true`), not fraud (`false`), none.
    pub label: Option<bool>,
    /// The transaction.
    pub tx: Transaction,
}

impl EntityTx {
    /// As the entity page lists it.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "transaction_id": self.transaction_id,
            "timestamp": self.timestamp,
            "kind": self.tx.kind.as_str(),
            "amount": self.amount,
            "decision": self.decision,
            "score": self.score,
            "merchant": self.tx.merchant.as_ref().map(|m| m.as_str()),
            "store": self.tx.store_id.as_ref().map(|m| m.as_str()),
            "label": self.label.map(|f| if f { "fraud" } else { "not_fraud" }),
        })
    }
}

/// `kind:id` of every entity a transaction names (the same keys the stores index).
pub fn entities_of(tx: &Transaction) -> Vec<(&'static str, String)> {
    crate::store::entity_keys(tx)
        .into_iter()
        .filter_map(|key| {
            let (kind, id) = key.split_once(':')?;
            let kind = PAGE_KINDS.iter().find(|k| **k == kind)?;
            Some((*kind, id.to_owned()))
        })
        .collect()
}

/// When a transaction id was stored (its event time), if it was.
pub async fn transaction_seen(
    records: &Records,
    id: &str,
) -> Result<Option<Timestamp>, StoreError> {
    match records {
        Records::Sqlite(s) => sqlite::transaction_seen(s, id.to_owned()).await,
        Records::Postgres { local, shared } => {
            match postgres::transaction_seen(shared, id).await {
                Ok(Some(t)) => Ok(Some(t)),
                // Not shipped yet, or PostgreSQL unreachable: this node's own records.
                Ok(None) | Err(_) => sqlite::transaction_seen(local, id.to_owned()).await,
            }
        }
    }
}

/// How many transactions name `entity` (`kind:id`, capped) and when it was last seen.
pub async fn entity_seen(
    records: &Records,
    entity: &str,
) -> Result<(i64, Option<Timestamp>), StoreError> {
    match records {
        Records::Sqlite(s) => sqlite::entity_seen(s, entity.to_owned()).await,
        Records::Postgres { local, shared } => match postgres::entity_seen(shared, entity).await {
            Ok(v) => Ok(v),
            Err(_) => sqlite::entity_seen(local, entity.to_owned()).await,
        },
    }
}

/// The counts of an entity's risk profile.
pub async fn entity_stats(records: &Records, entity: &str) -> Result<EntityStats, StoreError> {
    match records {
        Records::Sqlite(s) => sqlite::entity_stats(s, entity.to_owned()).await,
        Records::Postgres { local, shared } => match postgres::entity_stats(shared, entity).await {
            Ok(v) => Ok(v),
            Err(_) => sqlite::entity_stats(local, entity.to_owned()).await,
        },
    }
}

/// The newest `limit` transactions of an entity, newest first, with decisions and labels.
pub async fn entity_history(
    records: &Records,
    entity: &str,
    limit: u32,
) -> Result<Vec<EntityTx>, StoreError> {
    match records {
        Records::Sqlite(s) => sqlite::entity_history(s, entity.to_owned(), limit).await,
        Records::Postgres { local, shared } => {
            match postgres::entity_history(shared, entity, limit).await {
                Ok(v) => Ok(v),
                Err(_) => sqlite::entity_history(local, entity.to_owned(), limit).await,
            }
        }
    }
}

/// Looks `q` up as a transaction id and as every kind of entity; only what exists is
/// returned. (A card number must be turned into its token before it gets here.)
pub async fn search(records: &Records, q: &str) -> Result<Vec<SearchHit>, StoreError> {
    let mut hits = Vec::new();
    if let Some(at) = transaction_seen(records, q).await? {
        hits.push(SearchHit {
            kind: "transaction".into(),
            id: q.to_owned(),
            transactions: 1,
            more: false,
            last_seen: Some(at),
        });
    }
    for kind in SEARCH_KINDS {
        hits.extend(search_kind(records, kind, q).await?);
    }
    Ok(hits)
}

/// Looks `q` up as one kind of entity.
pub async fn search_kind(
    records: &Records,
    kind: &str,
    q: &str,
) -> Result<Option<SearchHit>, StoreError> {
    let (n, last_seen) = entity_seen(records, &format!("{kind}:{q}")).await?;
    Ok((n > 0).then(|| SearchHit {
        kind: kind.to_string(),
        id: q.to_owned(),
        transactions: n.min(COUNT_CAP),
        more: n > COUNT_CAP,
        last_seen,
    }))
}

/// A node of the link graph.
#[derive(Clone, Debug, Serialize)]
pub struct GraphNode {
    /// `kind:id`.
    pub id: String,
    /// The entity kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// The entity id (what to show).
    pub label: String,
    /// A transaction of it among those drawn is labelled fraud.
    pub fraud: bool,
    /// Of those transactions, how many were decided above approve.
    pub alerts: u32,
    /// Transactions drawn that name it.
    pub transactions: u32,
}

/// An edge: two entities named together by `transactions` transactions.
#[derive(Clone, Debug, Serialize)]
pub struct GraphEdge {
    /// A node id.
    pub source: String,
    /// A node id.
    pub target: String,
    /// Transactions naming both.
    pub transactions: u32,
}

/// An entity's 1-hop neighbourhood.
#[derive(Clone, Debug, Serialize)]
pub struct Graph {
    /// The centre's node id.
    pub center: String,
    /// Nodes, the centre first.
    pub nodes: Vec<GraphNode>,
    /// Edges between them.
    pub edges: Vec<GraphEdge>,
    /// Nodes were left out (the cap), or the centre has more transactions than were read.
    pub truncated: bool,
}

/// The link graph around `(kind, id)` from its transactions `history` (newest first, at most
/// `read_limit` were read), with at most `max_nodes` nodes: the centre, then the neighbours
/// that share the most transactions with it.
pub fn graph(
    kind: &str,
    id: &str,
    history: &[EntityTx],
    read_limit: usize,
    max_nodes: usize,
) -> Graph {
    let center = format!("{kind}:{id}");
    let mut nodes: HashMap<String, GraphNode> = HashMap::new();
    let mut edges: BTreeMap<(String, String), u32> = BTreeMap::new();
    for t in history {
        let mut named: Vec<(&str, String)> = entities_of(&t.tx)
            .into_iter()
            .filter(|(k, _)| LINK_KINDS.contains(k))
            .map(|(k, i)| (k, format!("{k}:{i}")))
            .collect();
        if !named.iter().any(|(_, key)| *key == center) {
            named.push((kind_static(kind), center.clone()));
        }
        for (k, key) in &named {
            let node = nodes.entry(key.clone()).or_insert_with(|| GraphNode {
                id: key.clone(),
                kind: (*k).to_owned(),
                label: key
                    .split_once(':')
                    .map_or(key.as_str(), |(_, i)| i)
                    .to_owned(),
                fraud: false,
                alerts: 0,
                transactions: 0,
            });
            node.transactions += 1;
            node.fraud |= t.label == Some(true);
            if t.decision != "approve" {
                node.alerts += 1;
            }
        }
        for (i, (_, a)) in named.iter().enumerate() {
            for (_, b) in &named[i + 1..] {
                let pair = if a < b {
                    (a.clone(), b.clone())
                } else {
                    (b.clone(), a.clone())
                };
                *edges.entry(pair).or_insert(0) += 1;
            }
        }
    }
    // Keep the centre and its strongest neighbours.
    let mut ranked: Vec<GraphNode> = nodes.into_values().collect();
    ranked.sort_by(|a, b| {
        (b.id == center)
            .cmp(&(a.id == center))
            .then(b.transactions.cmp(&a.transactions))
            .then(a.id.cmp(&b.id))
    });
    let truncated = ranked.len() > max_nodes || history.len() >= read_limit;
    ranked.truncate(max_nodes);
    let kept: std::collections::HashSet<&str> = ranked.iter().map(|n| n.id.as_str()).collect();
    let edges = edges
        .into_iter()
        .filter(|((a, b), _)| kept.contains(a.as_str()) && kept.contains(b.as_str()))
        .map(|((source, target), transactions)| GraphEdge {
            source,
            target,
            transactions,
        })
        .collect();
    Graph {
        center,
        nodes: ranked,
        edges,
        truncated,
    }
}

fn kind_static(kind: &str) -> &'static str {
    PAGE_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("entity")
}

/// Parses stored transaction JSON.
pub(crate) fn parse_tx(event: &str) -> Result<Transaction, StoreError> {
    serde_json::from_str(event).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The statement counting an entity's transactions (capped) and its latest event time.
pub(crate) const SEEN_SQL: &str = "SELECT COUNT(*), MAX(t.ts)
     FROM (SELECT seq FROM tx_entities WHERE entity = ?1 ORDER BY seq DESC LIMIT ?2) e
     JOIN transactions t ON t.seq = e.seq";

/// The statement of an entity's profile counts over its newest transactions (capped).
pub(crate) const STATS_SQL: &str = "SELECT COUNT(*),
        COALESCE(SUM(CASE WHEN x.action <> 'approve' THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN x.lf THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN NOT x.lf THEN 1 ELSE 0 END), 0),
        MIN(x.ts), MAX(x.ts)
     FROM (SELECT t.action, t.ts,
                  (SELECT l.fraud FROM labels l WHERE l.transaction_id = t.id
                   ORDER BY l.seq DESC LIMIT 1) AS lf
           FROM (SELECT seq FROM tx_entities WHERE entity = ?1 ORDER BY seq DESC LIMIT ?2) e
           JOIN transactions t ON t.seq = e.seq) x";

/// The statement of an entity's newest transactions with their latest labels.
pub(crate) const HISTORY_SQL: &str = "SELECT t.id, t.ts, t.amount, t.action, t.score, t.event,
            (SELECT l.fraud FROM labels l WHERE l.transaction_id = t.id
             ORDER BY l.seq DESC LIMIT 1)
     FROM tx_entities e JOIN transactions t ON t.seq = e.seq
     WHERE e.entity = ?1 ORDER BY e.seq DESC LIMIT ?2";

/// The statement of a transaction's event time.
pub(crate) const TX_SQL: &str = "SELECT ts FROM transactions WHERE id = ?1";

/// A statement in PostgreSQL's placeholder style (`$1` for `?1`; the texts above hold no
/// other `?`).
pub(crate) fn pg_sql(s: &str) -> String {
    s.replace('?', "$")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(id: &str, user: &str, card: &str, device: &str, label: Option<bool>) -> EntityTx {
        let tx: Transaction = serde_json::from_value(serde_json::json!({
            "transaction_id": id, "timestamp": "2026-11-20T10:00:00Z", "kind": "payment",
            "amount": 10.0, "user_id": user, "card_id": card, "device_id": device,
        }))
        .expect("tx");
        EntityTx {
            transaction_id: id.into(),
            timestamp: tx.timestamp,
            amount: 10.0,
            decision: "review".into(),
            score: 50.0,
            label,
            tx,
        }
    }

    #[test]
    fn a_shared_device_links_its_users_and_cards_and_fraud_marks_its_nodes() {
        let history = [
            tx("t1", "u1", "c1", "d1", Some(true)),
            tx("t2", "u2", "c2", "d1", None),
            tx("t3", "u2", "c2", "d1", None),
        ];
        let g = graph("device", "d1", &history, 1000, 300);
        assert_eq!(g.nodes[0].id, "device:d1");
        assert_eq!(g.nodes.len(), 5);
        let fraud: Vec<&str> = g
            .nodes
            .iter()
            .filter(|n| n.fraud)
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(fraud.len(), 3, "{fraud:?}");
        assert!(!fraud.contains(&"user:u2"));
        let u2c2 = g
            .edges
            .iter()
            .find(|e| e.source == "card:c2" && e.target == "user:u2")
            .expect("user-card edge");
        assert_eq!(u2c2.transactions, 2);
        assert!(!g.truncated);
        let capped = graph("device", "d1", &history, 1000, 2);
        assert_eq!(capped.nodes.len(), 2);
        assert!(capped.truncated);
        assert!(capped
            .edges
            .iter()
            .all(|e| e.source == "device:d1" || e.target == "device:d1"));
    }
}
