//! Rules through the API, on the real server: validation with every error at its line and
//! column, activation written to the rules file (and kept over a restart), a broken text
//! refused with the old rules still in force, shadow rules that count without deciding, a
//! rule's mode flipped in its file, and backtests whose numbers equal a hand count over the
//! transactions and labels posted, features built from history before the window included.
//! Activation reaches every node through the shared log; backtests read PostgreSQL's history
//! in production mode.

mod helpers;

use bytes::Bytes;
use helpers::services::{PostgresServer, RedisServer};
use helpers::{spawn_app_at, spawn_app_with, TestApp};
use ringfence::config::Secret;
use serde_json::{json, Value};

/// Sends `PUT path` with a JSON body.
async fn put(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let r = app
        .client
        .send(
            hyper::Request::put(app.url(path))
                .header("content-type", "application/json")
                .body(Bytes::from(body.to_string()))
                .expect("request"),
        )
        .await
        .expect("PUT");
    (r.status, r.json::<Value>().unwrap_or(Value::Null))
}

/// Decides one transaction of `amount` for a user of its own.
async fn decide(app: &TestApp, id: &str, amount: u32) -> Value {
    let body = json!({"transaction_id": id, "user_id": format!("user-{id}"), "amount": amount});
    let (status, d) = app.post_json("/v1/transactions", &body).await;
    assert_eq!(status, 200, "{d}");
    d
}

fn reason_rules(d: &Value, key: &str) -> Vec<String> {
    d[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn rule<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no rule {name} in {view}"))
}

const HUGE: &str = "[[rule]]\nname = \"huge\"\ncategory = \"amount\"\nwhen = \"tx.amount > 9000\"\nscore = 95\naction = \"block\"\nreason = \"amount {tx.amount} over 9000\"\n";

#[tokio::test]
async fn validate_reports_every_error_at_its_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_at(dir.path(), None).await;

    let (status, v) = app
        .post_json("/v1/rules/validate", &json!({ "source": HUGE }))
        .await;
    assert_eq!((status, &v), (200, &json!({"valid": true, "rules": 1})));

    // Two broken rules: a misspelt feature on line 4, an unknown action on line 10.
    let broken = "# two mistakes\n[[rule]]\nname = \"typo\"\nwhen = \"card.cnt_1m >= 3\"\nscore = 10\n\n[[rule]]\nname = \"bad_action\"\nwhen = \"tx.amount > 1\"\naction = \"stop\"\nscore = 1\n";
    let (status, v) = app
        .post_json("/v1/rules/validate", &json!({ "source": broken }))
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_rules", "{v}");
    assert_eq!(v["error"]["field"], "source", "{v}");
    let errors = v["error"]["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{v}");
    assert_eq!(
        (&errors[0]["rule"], &errors[0]["line"], &errors[0]["column"]),
        (&json!("typo"), &json!(4), &json!(9)),
        "{v}"
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did you mean `card.count_1m`")),
        "{v}"
    );
    assert_eq!(
        (&errors[1]["rule"], &errors[1]["line"], &errors[1]["column"]),
        (&json!("bad_action"), &json!(10), &json!(10)),
        "{v}"
    );

    // Bad requests name their field.
    for (body, field) in [
        (json!({}), "source"),
        (json!({"source": 3}), "source"),
        (json!({"source": "", "extra": 1}), "extra"),
    ] {
        let (status, v) = app.post_json("/v1/rules/validate", &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    let r = app.post("/v1/rules/validate", "{not json").await;
    assert_eq!(r.status, 400, "{}", r.text());
    app.stop().await;
}

#[tokio::test]
async fn an_activated_rule_fires_on_the_next_transaction_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_at(dir.path(), None).await;
    assert_eq!(decide(&app, "before", 9500).await["decision"], "approve");
    let (_, before) = app.get("/v1/rules/source").await;
    assert!(before["path"].is_null(), "built-in defaults: {before}");

    // The defaults plus one rule, as an analyst would edit the text in force.
    let source = format!(
        "{}\n{HUGE}",
        before["source"].as_str().expect("source text")
    );
    let (status, v) = put(&app, "/v1/rules", &json!({ "source": source })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["changed"], true, "{v}");
    let version = v["version"].as_u64().expect("version");
    assert!(
        version > before["version"].as_u64().expect("version"),
        "{v}"
    );

    let d = decide(&app, "after", 9500).await;
    assert_eq!(d["decision"], "block", "{d}");
    assert!(
        reason_rules(&d, "reasons").contains(&"huge".to_owned()),
        "{d}"
    );
    let (_, now) = app.get("/v1/rules/source").await;
    assert_eq!(now["source"], source.as_str());
    assert_eq!(now["version"], version);
    let saved = dir.path().join("rules.toml");
    assert_eq!(
        std::fs::read_to_string(&saved).expect("rules saved in the data directory"),
        source
    );
    // The same text again changes nothing.
    let (status, v) = put(&app, "/v1/rules", &json!({ "source": source })).await;
    assert_eq!((status, &v["changed"]), (200, &json!(false)), "{v}");
    assert_eq!(v["version"], version, "{v}");
    // The audit trail has the activation, once, with who and what it changed.
    let (status, trail) = app.get("/v1/audit?target=rules:in_force").await;
    assert_eq!(status, 200, "{trail}");
    let rows = trail["audit"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{trail}");
    assert_eq!(
        (&rows[0]["actor"], &rows[0]["action"]),
        (&json!("admin-key"), &json!("rule.activate")),
        "{trail}"
    );
    assert_eq!(rows[0]["detail"]["added"], json!(["huge"]), "{trail}");
    assert_eq!(rows[0]["detail"]["removed"], json!([]), "{trail}");
    assert_eq!(rows[0]["detail"]["version"], version, "{trail}");
    app.stop().await;

    // A restart on the same data directory starts from the activated rules.
    let app = spawn_app_at(dir.path(), None).await;
    let (_, view) = app.get("/v1/rules").await;
    assert_eq!(rule(&view, "huge")["action"], "block", "{view}");
    assert_eq!(decide(&app, "restarted", 9500).await["decision"], "block");
    let (_, now) = app.get("/v1/rules/source").await;
    assert_eq!(now["source"], source.as_str());
    app.stop().await;
}

#[tokio::test]
async fn a_broken_source_is_refused_and_the_old_rules_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_at(dir.path(), None).await;
    let (_, before) = app.get("/v1/rules/source").await;
    let broken = format!("{HUGE}\n[[rule]]\nname = \"half\"\nwhen = \"tx.amount >\"\nscore = 1\n");
    let (status, v) = put(&app, "/v1/rules", &json!({ "source": broken })).await;
    assert_eq!(status, 422, "{v}");
    let e = &v["error"]["errors"][0];
    assert_eq!(
        (&e["rule"], &e["line"]),
        (&json!("half"), &json!(11)),
        "{v}"
    );

    let (_, after) = app.get("/v1/rules/source").await;
    assert_eq!(
        after, before,
        "the rules in force and their version are unchanged"
    );
    let (_, trail) = app.get("/v1/audit?target=rules:in_force").await;
    assert_eq!(
        trail["audit"],
        json!([]),
        "a refused change is not an action: {trail}"
    );
    assert!(
        !dir.path().join("rules.toml").exists(),
        "nothing was written"
    );
    assert_eq!(decide(&app, "t", 9500).await["decision"], "approve");

    // Bad modes and missing text are 400s naming the field.
    let (status, v) = put(
        &app,
        "/v1/rules",
        &json!({ "source": HUGE, "new_rules_mode": "loud" }),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["field"]),
        (400, &json!("new_rules_mode")),
        "{v}"
    );
    let (status, v) = put(&app, "/v1/rules", &json!({})).await;
    assert_eq!(
        (status, &v["error"]["field"]),
        (400, &json!("source")),
        "{v}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_shadow_rule_counts_its_hits_without_changing_the_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_at(dir.path(), None).await;
    let (_, before) = app.get("/v1/rules/source").await;
    let source = format!("{}\n{HUGE}", before["source"].as_str().expect("text"));
    // New rules go in shadow: `huge` would block, but only watches.
    let (status, v) = put(
        &app,
        "/v1/rules",
        &json!({ "source": source, "new_rules_mode": "shadow" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, text) = app.get("/v1/rules/source").await;
    assert!(
        text["source"]
            .as_str()
            .is_some_and(|s| s.contains("name = \"huge\"\nmode = \"shadow\"\n")),
        "{text}"
    );

    let d = decide(&app, "s1", 9500).await;
    assert_eq!(d["decision"], "approve", "{d}");
    assert_eq!(reason_rules(&d, "shadow"), ["huge"], "{d}");
    assert!(
        !reason_rules(&d, "reasons").contains(&"huge".to_owned()),
        "{d}"
    );
    decide(&app, "s2", 9600).await;
    decide(&app, "s3", 10).await;

    let (_, view) = app.get("/v1/rules").await;
    let huge = rule(&view, "huge");
    assert_eq!(
        (&huge["mode"], &huge["hits"]),
        (&json!("shadow"), &json!(2)),
        "{view}"
    );
    assert_eq!(view["hits"]["shadow"], 2, "{view}");
    app.stop().await;
}

#[tokio::test]
async fn a_rules_mode_flips_in_its_file_keeping_comments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("house.toml");
    let original = format!("# The house rules: keep this comment.\n\n{HUGE}\n# a closing note\n");
    std::fs::write(&file, &original).expect("write");
    let app = spawn_app_at(&dir.path().join("data"), Some(file.clone())).await;
    assert_eq!(decide(&app, "m1", 9500).await["decision"], "block");

    let (status, v) = app
        .post_json("/v1/rules/huge/mode", &json!({"mode": "shadow"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["name"], &v["mode"], &v["changed"]),
        (&json!("huge"), &json!("shadow"), &json!(true))
    );
    let written = std::fs::read_to_string(&file).expect("read");
    assert_eq!(
        written,
        original.replace("name = \"huge\"\n", "name = \"huge\"\nmode = \"shadow\"\n"),
        "one line added, nothing else changed"
    );
    let d = decide(&app, "m2", 9500).await;
    assert_eq!(d["decision"], "approve", "{d}");
    assert_eq!(reason_rules(&d, "shadow"), ["huge"], "{d}");

    // And back: the line is edited in place.
    let (status, v) = app
        .post_json("/v1/rules/huge/mode", &json!({"mode": "active"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        original.replace("name = \"huge\"\n", "name = \"huge\"\nmode = \"active\"\n")
    );
    assert_eq!(decide(&app, "m3", 9500).await["decision"], "block");
    let (_, view) = app.get("/v1/rules").await;
    assert_eq!(rule(&view, "huge")["mode"], "active", "{view}");
    // The same mode again writes nothing.
    let (status, v) = app
        .post_json("/v1/rules/huge/mode", &json!({"mode": "active"}))
        .await;
    assert_eq!((status, &v["changed"]), (200, &json!(false)), "{v}");
    // Both changes are in the audit trail under the rule, newest first.
    let (_, trail) = app.get("/v1/audit?target=rule:huge").await;
    let modes: Vec<&Value> = trail["audit"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| &r["detail"]["mode"])
        .collect();
    assert_eq!(modes, [&json!("active"), &json!("shadow")], "{trail}");
    assert_eq!(trail["audit"][0]["action"], "rule.mode", "{trail}");
    assert_eq!(trail["audit"][0]["actor"], "admin-key", "{trail}");

    let (status, v) = app
        .post_json("/v1/rules/nope/mode", &json!({"mode": "shadow"}))
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("not_found")),
        "{v}"
    );
    let (status, v) = app
        .post_json("/v1/rules/huge/mode", &json!({"mode": "quiet"}))
        .await;
    assert_eq!((status, &v["error"]["field"]), (400, &json!("mode")), "{v}");
    app.stop().await;
}

/// One posted transaction of the backtest story.
struct Posted {
    id: String,
    /// Seconds after 2025-03-01T08:00:00Z.
    at: i64,
    card: &'static str,
    amount: u32,
}

fn at(seconds: i64) -> String {
    let base = 1_740_816_000; // 2025-03-01T08:00:00Z
    let t = time::OffsetDateTime::from_unix_timestamp(base + seconds).expect("time");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// Bursts of one card, 5 s apart, bursts minutes apart: `card.count_1m` of a transaction is
/// exactly how many of its burst came before it (the 1-minute window counts at least the last
/// 55 s). Amounts vary so `tx.amount` rules pick some.
fn story() -> Vec<Posted> {
    let mut out = Vec::new();
    let mut burst = |card: &'static str, start: i64, len: usize, amount: u32| {
        for i in 0..len {
            out.push(Posted {
                id: format!("bt-{card}-{start}-{i}"),
                at: start + 5 * i as i64,
                card,
                amount: amount + 100 * i as u32,
            });
        }
    };
    // Before the window (it will be 10:00:00 to 11:00:00).
    burst("a", 0, 4, 100); // 08:00
    burst("b", 3_600, 2, 50); // 09:00
                              // Straddling its start: two at 09:59:50 and :55, the third at 10:00:00 (inside, count 2).
    burst("c", 7_190, 4, 20);
    // Inside.
    burst("a", 7_800, 5, 300); // 10:10
    burst("d", 9_000, 1, 900); // 10:30
    burst("b", 9_600, 3, 10); // 10:40
    burst("e", 10_800, 1, 700); // 11:00:00, the latest event: the window ends here
    out.sort_by_key(|p| p.at);
    out
}

#[derive(Debug, Default, PartialEq)]
struct Hand {
    hits: u64,
    fraud: u64,
    not_fraud: u64,
    unlabelled: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_numbers_equal_a_hand_count_with_features_from_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_at(dir.path(), None).await;
    backtest_story(&app).await;
    app.stop().await;
}

/// The story's verdicts, in the order they are given: some fraud, some not, one changed from
/// fraud to not fraud, one before the window (it must not count).
const VERDICTS: [(&str, bool); 8] = [
    ("bt-c-7190-2", true),
    ("bt-c-7190-3", true),
    ("bt-a-7800-3", true),
    ("bt-a-7800-4", false),
    ("bt-b-9600-2", true),
    ("bt-b-9600-2", false),
    ("bt-d-9000-0", true),
    ("bt-a-0-3", true),
];

/// Posts the story's transactions, then its verdicts.
async fn post_story(app: &TestApp) {
    for p in &story() {
        let body = json!({"transaction_id": p.id, "timestamp": at(p.at), "card_id": p.card, "amount": p.amount});
        let (status, d) = app.post_json("/v1/transactions", &body).await;
        assert_eq!(status, 200, "{d}");
    }
    for (id, fraud) in VERDICTS {
        let (status, v) = app
            .post_json("/v1/labels", &json!({"transaction_id": id, "fraud": fraud}))
            .await;
        assert_eq!(status, 201, "{v}");
    }
}

/// Posts the story and its labels to `app` and checks a backtest against a hand count.
async fn backtest_story(app: &TestApp) {
    post_story(app).await;
    let story = story();
    let latest: std::collections::HashMap<&str, bool> = VERDICTS.into_iter().collect();

    // The hand count: the window is the hour up to the latest event (11:00:00).
    let end = story.iter().map(|p| p.at).max().expect("story");
    let inside: Vec<&Posted> = story.iter().filter(|p| p.at >= end - 3600).collect();
    let count_1m = |p: &Posted| {
        story
            .iter()
            .filter(|q| q.card == p.card && q.at < p.at && p.at - q.at < 55)
            .count()
    };
    let tally = |pred: &dyn Fn(&Posted) -> bool| {
        let mut h = Hand::default();
        for p in inside.iter().filter(|p| pred(p)) {
            h.hits += 1;
            match latest.get(p.id.as_str()) {
                Some(true) => h.fraud += 1,
                Some(false) => h.not_fraud += 1,
                None => h.unlabelled += 1,
            }
        }
        h
    };
    let burst2 = tally(&|p| count_1m(p) >= 2);
    let burst3 = tally(&|p| count_1m(p) >= 3);
    let big = tally(&|p| p.amount > 500);
    // The straddling burst's first one inside has count 2 only thanks to the two before it.
    assert!(count_1m(inside[0]) == 2 && inside[0].id == "bt-c-7190-2");
    assert_eq!(burst2.hits, 6, "hand count sanity: c2 c3 a2 a3 a4 b2");

    // `card_velocity` is in force (count >= 3); the candidate lowers it to 2 and adds `big`.
    let candidate = "[[rule]]\nname = \"card_velocity\"\nwhen = \"card.count_1m >= 2\"\nscore = 60\n\n[[rule]]\nname = \"big\"\nwhen = \"tx.amount > 500\"\nscore = 40\nmode = \"shadow\"\n";
    let (status, r) = app
        .post_json(
            "/v1/rules/backtest",
            &json!({"source": candidate, "hours": 1}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["events_in_window"], inside.len() as u64, "{r}");
    assert_eq!(r["history_transactions"], story.len() as u64, "{r}");
    assert_eq!(r["window"]["to"], at(end), "{r}");
    assert_eq!(r["window"]["from"], at(end - 3600), "{r}");
    let fraud_in_window = inside
        .iter()
        .filter(|p| latest.get(p.id.as_str()) == Some(&true))
        .count();
    assert_eq!(r["fraud_labels_in_window"], fraud_in_window as u64, "{r}");
    assert!(r["elapsed_ms"].is_u64(), "{r}");
    assert_eq!(r["this_node_only"], false, "{r}");
    let got = |v: &Value| Hand {
        hits: v["hits"].as_u64().unwrap_or(u64::MAX),
        fraud: v["confirmed_fraud"].as_u64().unwrap_or(u64::MAX),
        not_fraud: v["false_positives"].as_u64().unwrap_or(u64::MAX),
        unlabelled: v["unlabelled"].as_u64().unwrap_or(u64::MAX),
    };
    let velocity = rule(&r, "card_velocity");
    assert_eq!(got(velocity), burst2, "{r}");
    assert_eq!(got(&velocity["active"]), burst3, "the rule in force: {r}");
    assert_eq!(velocity["active"]["when"], "card.count_1m >= 3", "{r}");
    let samples: Vec<&str> = velocity["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(samples.len(), 5, "{r}");
    assert_eq!(samples[0], "bt-b-9600-2", "the latest hit first: {r}");
    let big_rule = rule(&r, "big");
    assert_eq!(got(big_rule), big, "{r}");
    assert!(big_rule["active"].is_null(), "a new rule: {r}");
    assert_eq!(big_rule["mode"], "shadow", "{r}");

    // Bad hours are refused by field; nothing is in force from a backtest.
    for hours in [json!(0), json!(721), json!(-1), json!("24")] {
        let (status, v) = app
            .post_json(
                "/v1/rules/backtest",
                &json!({"source": candidate, "hours": hours}),
            )
            .await;
        assert_eq!(
            (status, &v["error"]["field"]),
            (400, &json!("hours")),
            "{hours}: {v}"
        );
    }
    let (status, v) = app
        .post_json(
            "/v1/rules/backtest",
            &json!({"source": "[[rule]]\nname = \"x\"\n"}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    let (_, view) = app.get("/v1/rules").await;
    assert_eq!(rule(&view, "card_velocity")["when"], "card.count_1m >= 3");
}

/// Backtesting the rules in force over all of the history gives each rule exactly the hits the
/// live engine counted: the replay recomputes the features it decided with, velocity, shared
/// devices and rings with confirmed fraud (labels given between transactions) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtesting_the_rules_in_force_reproduces_the_live_hit_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_at(dir.path(), None).await;
    for i in 0..360 {
        let (status, d) = app
            .post_json("/v1/transactions", &helpers::mixed_tx("live", 9, i))
            .await;
        assert_eq!(status, 200, "{d}");
        if i % 90 == 45 {
            let (status, v) = app
                .post_json(
                    "/v1/labels",
                    &json!({"transaction_id": format!("live-{i}"), "fraud": true}),
                )
                .await;
            assert_eq!(status, 201, "{v}");
        }
    }
    let (_, live) = app.get("/v1/rules").await;
    let (_, text) = app.get("/v1/rules/source").await;
    let (status, r) = app
        .post_json(
            "/v1/rules/backtest",
            &json!({"source": text["source"], "hours": 2}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["events_in_window"], 360, "{r}");
    let mut fired = 0;
    for counted in live["rules"].as_array().expect("rules") {
        let name = counted["name"].as_str().expect("name");
        let tried = rule(&r, name);
        assert_eq!(tried["hits"], counted["hits"], "{name}: {r}");
        assert_eq!(tried["active"]["hits"], counted["hits"], "{name}: {r}");
        fired += usize::from(counted["hits"].as_u64() > Some(0));
    }
    for name in [
        "card_velocity",
        "shared_device",
        "ring_with_confirmed_fraud",
    ] {
        assert!(
            rule(&live, name)["hits"].as_u64() > Some(0),
            "{name} fired: {live}"
        );
    }
    assert!(fired >= 3, "{live}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtests_read_postgres_history_in_production_mode() {
    let server = PostgresServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |a| a.postgres = Some(Secret::new(url.clone()))).await;
    // An empty history has no window.
    let (status, r) = app
        .post_json("/v1/rules/backtest", &json!({"source": HUGE}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert!(r["window"].is_null(), "{r}");
    assert_eq!(r["events_in_window"], 0, "{r}");

    // Records reach PostgreSQL through the node's buffer: wait until all of them are there.
    let expected = story().len() as u64;
    let labels = 8;
    post_story(&app).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, stats) = app.get("/v1/stats").await;
        let stored = &stats["stored"];
        if stored["transactions"] == expected && stored["labels"] == labels {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "records did not reach postgres: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, r) = app
        .post_json(
            "/v1/rules/backtest",
            &json!({"source": "[[rule]]\nname = \"v\"\nwhen = \"card.count_1m >= 2\"\nscore = 1\n", "hours": 1}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["history_transactions"], expected, "{r}");
    assert_eq!(r["history_labels"], labels, "{r}");
    let v = rule(&r, "v");
    assert_eq!(
        (&v["hits"], &v["confirmed_fraud"], &v["false_positives"]),
        (&json!(6), &json!(3), &json!(2)),
        "{r}"
    );
    app.stop().await;
}

/// With shared state, an activation on one node is in force on every node at once, and a
/// mode flip too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_reaches_every_node_through_the_shared_log() {
    let server = RedisServer::start();
    let url = server.url();
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = spawn_app_with(da.path(), |s| s.redis = Some(Secret::new(url.clone()))).await;
    let b = spawn_app_with(db.path(), |s| s.redis = Some(Secret::new(url.clone()))).await;
    let (status, v) = put(&a, "/v1/rules", &json!({ "source": HUGE })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(decide(&b, "n1", 9500).await["decision"], "block");
    let (_, source) = b.get("/v1/rules/source").await;
    assert_eq!(
        source["source"], HUGE,
        "b shows the text in force: {source}"
    );
    // Each node stores the transactions it decided: a backtest says it saw only those.
    let (status, r) = b
        .post_json("/v1/rules/backtest", &json!({ "source": HUGE }))
        .await;
    assert_eq!((status, &r["this_node_only"]), (200, &json!(true)), "{r}");
    assert_eq!(r["history_transactions"], 1, "b decided n1 only: {r}");

    let (status, v) = b
        .post_json("/v1/rules/huge/mode", &json!({"mode": "shadow"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(decide(&a, "n2", 9500).await["decision"], "approve");
    let (_, view) = a.get("/v1/rules").await;
    assert_eq!(rule(&view, "huge")["mode"], "shadow", "{view}");
    a.stop().await;
    b.stop().await;
}
