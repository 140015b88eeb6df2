//! Two nodes sharing one Redis log decide exactly as one node: each appends its own
//! transactions (concurrently, in batches) and applies every entry in log order; the decisions
//! they answer equal a single engine's over the same order, their states end identical, and a
//! transaction id sent to both is applied once.

mod helpers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use helpers::services::RedisServer;
use ringfence::host::DEFAULT_RULES;
use ringfence::shared::log::{LogEntry, LogId, SharedLog};
use ringfence::shared::replica::{Applied, LogCursor};
use ringfence_core::decision::Decision;
use ringfence_core::engine::{Engine, EngineConfig};
use ringfence_core::event::{CardHasher, ParseContext, RawTransaction, Timestamp, Transaction};
use ringfence_core::rules::RuleSet;

fn engine() -> Engine {
    let rules = RuleSet::from_toml(DEFAULT_RULES).expect("default rules");
    Engine::new(EngineConfig::default(), Arc::new(rules))
}

/// The i-th transaction: few users, cards and devices, so velocity, shared-device and ring
/// rules fire and alerts feed the escalation ladder.
fn tx(i: usize) -> Transaction {
    let json = format!(
        r#"{{"transaction_id":"t{}","timestamp":"{}","user_id":"u{}","card_id":"c{}","device_id":"d{}","amount":{},"merchant":"m{}"}}"#,
        // t77 is sent by both nodes (a retry that reached two nodes).
        if i == 1077 { 77 } else { i },
        Timestamp::from_millis(1_763_700_000_000 + (i as i64 % 1000) * 7_000).to_rfc3339(),
        i % 9,
        i % 13,
        i % 5,
        5 + (i * 53) % 700,
        i % 4
    );
    let hasher = CardHasher::new(b"test-card-hash-key-0123456789abcdef");
    let cx = ParseContext {
        card_hasher: &hasher,
        now: Timestamp::from_millis(1_763_700_000_000),
        latest: Timestamp::MAX,
        generated_id: &|| "unused".into(),
    };
    let raw: RawTransaction = serde_json::from_str(&json).expect("json");
    Transaction::parse(raw, &cx).expect("valid transaction")
}

struct Node {
    replica: Mutex<(Engine, LogCursor, HashMap<LogId, Applied<Decision>>)>,
    log: SharedLog,
    id: u64,
}

impl Node {
    /// One request: appends a batch, applies what the log returns, answers its own entries.
    async fn submit(&self, batch: Vec<Transaction>) -> Vec<(String, Applied<Decision>)> {
        let position = self.replica.lock().expect("lock").1.position();
        let entries: Vec<LogEntry> = batch
            .iter()
            .map(|t| LogEntry::Tx {
                tx: Box::new(t.clone()),
                origin: self.id,
            })
            .collect();
        let returned = self.log.append(position, &entries).await.expect("append");
        // Ours are the last `batch.len()` entries of the reply.
        let ours: Vec<LogId> = returned[returned.len() - batch.len()..]
            .iter()
            .map(|(id, _)| *id)
            .collect();
        let mut guard = self.replica.lock().expect("lock");
        let (engine, cursor, results) = &mut *guard;
        cursor.apply(
            engine,
            self.id,
            &returned,
            &mut Default::default(),
            results,
            |_, _, s| s.decision,
        );
        ours.iter()
            .zip(&batch)
            .map(|(id, t)| {
                let r = results.remove(id).expect("our entry was applied");
                (t.transaction_id.as_str().to_owned(), r)
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_log_decide_as_one() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("client");
    let log = SharedLog::new(client, "ringfence:log");
    let nodes: Vec<Arc<Node>> = (1..=2)
        .map(|id| {
            Arc::new(Node {
                id,
                replica: Mutex::new((engine(), LogCursor::new(), HashMap::new())),
                log: log.clone(),
            })
        })
        .collect();

    // 600 transactions; node 0 takes even ones, node 1 odd ones, each in batches of 1..=5,
    // the two nodes running at once. Transaction t77 goes to both.
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let node = Arc::clone(node);
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<Transaction> = (0..600).filter(|i| i % 2 == n).map(tx).collect();
            if n == 0 {
                mine.push(tx(1077));
            }
            let mut answers = Vec::new();
            let mut k = 0;
            while k < mine.len() {
                let size = 1 + (k * 7 + n) % 5;
                let batch: Vec<Transaction> = mine[k..(k + size).min(mine.len())].to_vec();
                k += batch.len();
                answers.extend(node.submit(batch).await);
            }
            answers
        }));
    }
    let mut answered: HashMap<String, Vec<Applied<Decision>>> = HashMap::new();
    for t in tasks {
        for (id, a) in t.await.expect("node task") {
            answered.entry(id).or_default().push(a);
        }
    }

    // A single engine over the log, in log order.
    let all = log.read(LogId::START, 10_000).await.expect("read");
    assert_eq!(all.len(), 601);
    // The nodes really ran at once: their entries interleave in the log.
    let owner = |e: &LogEntry| match e {
        LogEntry::Tx { origin, .. } => *origin,
        _ => 0,
    };
    let switches = all
        .windows(2)
        .filter(|w| owner(&w[0].1) != owner(&w[1].1))
        .count();
    assert!(
        switches > 10,
        "only {switches} switches between the nodes' entries"
    );
    let mut single = engine();
    let mut seen = std::collections::HashSet::new();
    let mut decided = 0;
    for (_, entry) in &all {
        let LogEntry::Tx { tx, .. } = entry else {
            panic!("only transactions were appended")
        };
        let id = tx.transaction_id.as_str().to_owned();
        let answers = answered.get(&id).expect("answered");
        if !seen.insert(id.clone()) {
            continue; // the second copy of t77
        }
        let expected = single.score(tx).decision;
        let got: Vec<&Applied<Decision>> = answers
            .iter()
            .filter(|a| matches!(a, Applied::Decided(_)))
            .collect();
        assert_eq!(got.len(), 1, "{id} decided once: {answers:?}");
        assert_eq!(got[0], &Applied::Decided(expected), "{id}");
        decided += 1;
    }
    assert_eq!(decided, 600);
    let t77 = &answered["t77"];
    assert!(
        t77.iter().any(|a| matches!(a, Applied::Duplicate(Some(_)))),
        "{t77:?}"
    );
    let flagged = answered
        .values()
        .flatten()
        .filter(|a| matches!(a, Applied::Decided(d) if d.decision != ringfence_core::decision::Action::Approve))
        .count();
    assert!(
        flagged > 20,
        "the stream must exercise the rules ({flagged} flagged)"
    );

    // Both replicas caught up end in the same state as the single engine.
    for node in &nodes {
        let mut guard = node.replica.lock().expect("lock");
        let (engine, cursor, results) = &mut *guard;
        let position = cursor.position();
        let rest: Vec<_> = all
            .iter()
            .filter(|(id, _)| *id > position)
            .cloned()
            .collect();
        cursor.apply(
            engine,
            node.id,
            &rest,
            &mut Default::default(),
            results,
            |_, _, s| s.decision,
        );
        for probe in [tx(5000), tx(5001), tx(5002)] {
            assert_eq!(
                format!("{:?}", engine.evaluate(&probe).features.num),
                format!("{:?}", single.evaluate(&probe).features.num)
            );
        }
    }
}
