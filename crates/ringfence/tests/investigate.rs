//! Investigate through the real server: every kind of search, a card number searched by its
//! token (never stored or echoed), entity profiles, and the link graph of a ring of users
//! sharing devices and cards.

mod helpers;

use helpers::spawn_app_with;
use serde_json::{json, Value};

/// A test card number (valid check digit).
const PAN: &str = "4111111111111111";

fn types_of(results: &Value) -> Vec<(String, String)> {
    results["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap_or("").to_owned(),
                r["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn search_finds_each_kind_and_hashes_card_numbers() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let (status, d) = app
        .post_json(
            "/v1/transactions",
            &json!({
                "transaction_id": "s-1", "user_id": "s-user", "card_id": "s-card",
                "device_id": "s-device", "ip": "203.0.113.9", "merchant": "s-merchant",
                "amount": 20, "timestamp": "2026-11-20T10:00:00Z",
            }),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    let (status, d) = app
        .post_json(
            "/v1/transactions",
            &json!({
                "transaction_id": "s-2", "kind": "purchase", "store_id": "s-store",
                "receipt_id": "s-receipt", "terminal_id": "s-till",
                "items": [{"sku": "kettle", "quantity": 1, "price": 30}],
                "amount": 30, "timestamp": "2026-11-20T10:01:00Z",
            }),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    let (status, d) = app
        .post_json(
            "/v1/transactions",
            &json!({"transaction_id": "s-3", "card_number": PAN, "amount": 12}),
        )
        .await;
    assert_eq!(status, 200, "{d}");

    for (q, kind) in [
        ("s-1", "transaction"),
        ("s-user", "user"),
        ("s-card", "card"),
        ("s-device", "device"),
        ("203.0.113.9", "ip"),
        ("s-merchant", "merchant"),
        ("s-store", "store"),
        ("s-receipt", "receipt"),
        ("s-till", "terminal"),
    ] {
        let (status, found) = app.get(&format!("/v1/search?q={q}")).await;
        assert_eq!(status, 200, "{q}: {found}");
        assert_eq!(
            types_of(&found),
            vec![(kind.to_owned(), q.to_owned())],
            "{q}: {found}"
        );
        assert_eq!(found["results"][0]["transactions"], 1, "{found}");
        assert!(found["results"][0]["last_seen"].is_string(), "{found}");
        assert_eq!(found["hashed"], false);
    }
    let (status, none) = app.get("/v1/search?q=nobody-at-all").await;
    assert_eq!(status, 200);
    assert_eq!(none["results"], json!([]));

    // A card number is looked up by its token: the answer holds the token, never the number.
    for q in [PAN, "4111%201111%201111%201111", "4111-1111-1111-1111"] {
        let (status, found) = app.get(&format!("/v1/search?q={q}")).await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["hashed"], true, "{found}");
        let text = found.to_string();
        assert!(!text.contains(PAN) && !text.contains("1111 1111"), "{text}");
        let hits = types_of(&found);
        assert_eq!(hits.len(), 1, "{found}");
        assert_eq!(hits[0].0, "card");
        assert_eq!(hits[0].1, found["query"].as_str().expect("token"));
        // The token is the card of the stored transaction, whose page it opens.
        let (status, stored) = app.get("/v1/transactions/s-3").await;
        assert_eq!(status, 200);
        assert_eq!(
            stored["transaction"]["card_id"].as_str(),
            Some(hits[0].1.as_str())
        );
    }
    let (status, card) = app.get(&format!("/v1/entities/card/{PAN}")).await;
    assert_eq!(status, 200, "{card}");
    assert!(!card.to_string().contains(PAN));

    // The stored records hold no card number either.
    let db = std::fs::read(dir.path().join("ringfence.db")).expect("db");
    let wal = std::fs::read(dir.path().join("ringfence.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(PAN.len()).any(|w| w == PAN.as_bytes()),
            "the card number reached storage"
        );
    }

    for path in [
        "/v1/search",
        "/v1/search?q=",
        &format!("/v1/search?q={}", "x".repeat(200)),
    ] {
        let (status, err) = app.get(path).await;
        assert_eq!(status, 400, "{path}: {err}");
        assert_eq!(err["error"]["field"], "q");
    }

    // Store and receipt pages exist (found through their transactions).
    let (status, store) = app.get("/v1/entities/store/s-store").await;
    assert_eq!(status, 200, "{store}");
    assert_eq!(store["profile"]["transactions"], 1);
    assert_eq!(store["recent_transactions"][0]["transaction_id"], "s-2");
    let (status, err) = app.get("/v1/entities/planet/mars").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "type");
    app.stop().await;
}

#[tokio::test]
async fn the_graph_of_a_ring_links_users_through_shared_devices_and_cards() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    // Three users; u1 and u2 share device d-a, u2 and u3 share card c-x; u4 is unrelated.
    let txs = [
        ("g-1", "u1", "c-1", "d-a"),
        ("g-2", "u2", "c-2", "d-a"),
        ("g-3", "u2", "c-x", "d-b"),
        ("g-4", "u3", "c-x", "d-c"),
        ("g-5", "u4", "c-4", "d-d"),
    ];
    for (i, (id, user, card, device)) in txs.iter().enumerate() {
        let (status, d) = app
            .post_json(
                "/v1/transactions",
                &json!({
                    "transaction_id": id, "user_id": user, "card_id": card, "device_id": device,
                    "amount": 60, "timestamp": format!("2026-11-20T10:0{i}:00Z"),
                }),
            )
            .await;
        assert_eq!(status, 200, "{d}");
    }
    let (status, label) = app
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "g-1", "label": "fraud"}),
        )
        .await;
    assert_eq!(status, 201, "{label}");

    let (status, g) = app.get("/v1/graph/device/d-a").await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["center"], "device:d-a");
    let nodes: Vec<&str> = g["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(nodes[0], "device:d-a");
    let mut sorted = nodes.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["card:c-1", "card:c-2", "device:d-a", "user:u1", "user:u2"]
    );
    let node = |id: &str| -> Value {
        g["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["id"] == id))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(node("user:u1")["fraud"], true, "{g}");
    assert_eq!(node("device:d-a")["fraud"], true);
    assert_eq!(node("user:u2")["fraud"], false);
    assert_eq!(node("user:u2")["type"], "user");
    assert_eq!(node("user:u2")["label"], "u2");
    assert_eq!(
        node("user:u2")["alerts"],
        1,
        "the second user on the device is alerted"
    );
    let has_edge = |a: &str, b: &str| {
        g["edges"].as_array().expect("edges").iter().any(|e| {
            (e["source"] == a && e["target"] == b) || (e["source"] == b && e["target"] == a)
        })
    };
    assert!(has_edge("user:u1", "device:d-a"));
    assert!(has_edge("user:u2", "card:c-2"));
    assert!(has_edge("card:c-1", "device:d-a"));
    assert_eq!(g["truncated"], false);

    // Expanding u2 reaches the shared card and, through it, nothing of u4.
    let (_, g2) = app.get("/v1/graph/user/u2").await;
    let ids = g2.to_string();
    assert!(
        ids.contains("card:c-x") && ids.contains("device:d-b"),
        "{g2}"
    );
    assert!(!ids.contains("u4"));
    let (_, g3) = app.get("/v1/graph/card/c-x").await;
    assert!(g3.to_string().contains("user:u3"), "{g3}");

    // Capped: the centre and its strongest neighbour.
    let (status, small) = app.get("/v1/graph/device/d-a?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(small["nodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(small["truncated"], true);

    let (status, _) = app.get("/v1/graph/device/nowhere").await;
    assert_eq!(status, 404);
    let (status, err) = app.get("/v1/graph/device/d-a?limit=1000").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "limit");

    // The user's profile counts its alerts and fraud labels.
    let (_, u1) = app.get("/v1/entities/user/u1").await;
    assert_eq!(u1["profile"]["transactions"], 1, "{u1}");
    assert_eq!(u1["profile"]["labelled_fraud"], 1, "{u1}");
    assert_eq!(u1["recent_transactions"][0]["label"], "fraud");
    let (_, d) = app.get("/v1/entities/device/d-a").await;
    assert_eq!(d["profile"]["transactions"], 2, "{d}");
    assert_eq!(d["profile"]["alerts"], 1, "{d}");
    assert_eq!(d["linked"]["users"], json!(["u1", "u2"]));
    app.stop().await;
}
