//! The test harness's private servers behave like real ones: Redis answers, loses its data
//! when killed (persistence off) and comes back on the same port; PostgreSQL keeps its data
//! across a stop and a start.

mod helpers;

use helpers::services::{PostgresServer, RedisServer};

#[tokio::test]
async fn private_redis_starts_stops_and_resumes() {
    let mut server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .expect("set");
    let v: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .expect("get");
    assert_eq!(v, "v");
    server.stop();
    assert!(
        client.get_multiplexed_async_connection().await.is_err(),
        "stopped means unreachable"
    );
    server.resume();
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("reconnect");
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .expect("get");
    assert_eq!(v, None);
}

#[tokio::test]
async fn private_postgres_keeps_data_across_a_restart() {
    let mut server = PostgresServer::start();
    let connect = |url: String| async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    };
    let client = connect(server.url()).await;
    client
        .batch_execute("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (7);")
        .await
        .expect("create");
    drop(client);
    server.stop();
    assert!(
        tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
            .await
            .is_err(),
        "stopped means unreachable"
    );
    server.resume();
    let client = connect(server.url()).await;
    let row = client
        .query_one("SELECT id FROM t", &[])
        .await
        .expect("select");
    assert_eq!(row.get::<_, i32>(0), 7);
}
