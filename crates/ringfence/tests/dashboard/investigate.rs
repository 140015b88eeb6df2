//! The investigate page in Chromium: a device found by search, its link graph drawn, a user
//! node tapped and expanded (the node count grows to the union of both neighbourhoods, as the
//! API gives them).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::browser;
use crate::helpers::spawn_app_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_expands_a_node_of_the_ring_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    // A ring: three users on one device; the second also pays with a card a fourth user has.
    let txs = [
        ("r-1", "ring-u1", "ring-c1", "ring-dev"),
        ("r-2", "ring-u2", "ring-c2", "ring-dev"),
        ("r-3", "ring-u3", "ring-c3", "ring-dev"),
        ("r-4", "ring-u2", "ring-cx", "ring-dev-2"),
        ("r-5", "ring-u4", "ring-cx", "ring-dev-3"),
    ];
    for (id, user, card, device) in txs {
        let (status, d) = app
            .post_json(
                "/v1/transactions",
                &json!({"transaction_id": id, "user_id": user, "card_id": card, "device_id": device, "amount": 80}),
            )
            .await;
        assert_eq!(status, 200, "{d}");
    }
    let (status, _) = app
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "r-1", "label": "fraud"}),
        )
        .await;
    assert_eq!(status, 201);

    let password = app.create_user("ivan", "analyst").await;
    let out: Value = browser::run(
        "investigate.mjs",
        &app.base,
        ("ivan", &password),
        &["ring-dev", "user:ring-u2"],
    )
    .await;
    let before = out["before"].as_u64().expect("before");
    let after = out["after"].as_u64().expect("after");
    assert!(after > before, "{out}");

    // What the page drew is what the API gives for the two neighbourhoods.
    let mut expected = BTreeSet::new();
    for path in [
        "/v1/graph/device/ring-dev?limit=60",
        "/v1/graph/user/ring-u2?limit=60",
    ] {
        let (status, g) = app.get(path).await;
        assert_eq!(status, 200, "{g}");
        for n in g["nodes"].as_array().expect("nodes") {
            expected.insert(n["id"].as_str().expect("id").to_owned());
        }
    }
    let drawn: BTreeSet<String> = out["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    assert_eq!(drawn, expected, "{out}");
    assert_eq!(before, 7, "device, three users, three cards: {out}");
    let fraud: Vec<&str> = out["fraud"]
        .as_array()
        .expect("fraud")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        fraud.contains(&"user:ring-u1") && fraud.contains(&"card:ring-c1"),
        "{out}"
    );
    assert!(!fraud.contains(&"user:ring-u2"), "{out}");

    // The card number went in a POST body; the address holds the token the API gives for it.
    let hash = out["cardHash"].as_str().expect("cardHash");
    assert!(!hash.contains("4111"), "{hash}");
    let (status, found) = app
        .post_json(
            "/v1/search",
            &serde_json::json!({"q": "4111-1111-1111-1111"}),
        )
        .await;
    assert_eq!(
        (status, &found["hashed"]),
        (200, &Value::Bool(true)),
        "{found}"
    );
    let token = found["query"].as_str().expect("token");
    assert_eq!(hash, format!("#/investigate?q={token}"));
    app.stop().await;
}
