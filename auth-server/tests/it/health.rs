//! `grpc.health.v1.Health` follows the database.

use std::time::Duration;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{every_backend, helpers::*};

every_backend!(health_is_serving_for_the_server_and_auth_service);

async fn status(app: &TestApp, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel(app.addr).await);
    let response = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner();
    ServingStatus::try_from(response.status).expect("known status")
}

async fn wait_for(app: &TestApp, want: ServingStatus) {
    for _ in 0..100 {
        if status(app, "").await == want && status(app, "auth.v1.AuthService").await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health never became {want:?}");
}

async fn health_is_serving_for_the_server_and_auth_service(db: Db) {
    let app = spawn_app(db).await;
    assert_eq!(status(&app, "").await, ServingStatus::Serving);
    assert_eq!(
        status(&app, "auth.v1.AuthService").await,
        ServingStatus::Serving
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_postgres_is_unreachable_and_recovers() {
    let app = spawn_app(Db::Postgres).await;
    let name = app.db.pg_name().expect("postgres").to_owned();
    wait_for(&app, ServingStatus::Serving).await;

    // Cut the server off its database: refuse new connections and kill the open ones.
    pg_admin(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .await;
    pg_admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .await;
    wait_for(&app, ServingStatus::NotServing).await;
    let status = app
        .login("x@example.com", PASSWORD)
        .await
        .expect_err("no database");
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Internal
        ),
        "login without database: {status:?}"
    );

    pg_admin(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).await;
    wait_for(&app, ServingStatus::Serving).await;
    app.register("back@example.com", PASSWORD)
        .await
        .expect("works again");
}

/// Connections cut while queries run (the database terminating every connection of the server
/// every 20 ms, under 16 callers writing): each failed call is UNAVAILABLE (clients retry
/// those), never INTERNAL; the server recovers by itself afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_query_are_unavailable_postgres() {
    connections_cut_mid_query_are_unavailable(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_query_are_unavailable_mysql() {
    connections_cut_mid_query_are_unavailable(Db::Mysql).await;
}

/// Kills every connection the server has to its database, from an admin connection.
async fn cut_connections(admin: &sea_orm::DatabaseConnection, db: Db, name: &str) {
    use sea_orm::ConnectionTrait as _;
    match db {
        Db::Postgres => {
            let _ = admin
                .execute_unprepared(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ))
                .await;
        }
        Db::Mysql => {
            let ids = admin
                .query_all_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::MySql,
                    format!(
                        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{name}' AND ID <> CONNECTION_ID()"
                    ),
                ))
                .await
                .unwrap_or_default();
            for row in ids {
                let id = row.try_get_by_index::<i64>(0).expect("connection id");
                let _ = admin.execute_unprepared(&format!("KILL {id}")).await;
            }
        }
        Db::Sqlite => unreachable!("a file has no connections to cut"),
    }
}

async fn connections_cut_mid_query_are_unavailable(db: Db) {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let app = spawn_app(db).await;
    let name = app
        .db
        .url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_owned();
    let admin_url = match db {
        Db::Postgres => auth_server::testkit::admin_url(),
        _ => format!("{}/", auth_server::testkit::mysql_admin_url()),
    };
    let admin = sea_orm::Database::connect(admin_url)
        .await
        .expect("admin connection");
    let stop = Arc::new(AtomicBool::new(false));
    let cutter = {
        let stop = Arc::clone(&stop);
        let name = name.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                cut_connections(&admin, db, &name).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            admin.close().await.ok();
        })
    };
    let callers = (0..16).map(|caller| {
        let app_client = app.client.clone();
        async move {
            let mut codes = Vec::new();
            for i in 0..25 {
                let mut client = app_client.clone();
                let result = client
                    .register(auth_proto::pb::RegisterRequest {
                        email: format!("cut{caller}-{i}@example.com"),
                        password: PASSWORD.into(),
                        display_name: String::new(),
                    })
                    .await;
                codes.push(result.map_or_else(|s| s.code(), |_| tonic::Code::Ok));
            }
            codes
        }
    });
    let codes: Vec<tonic::Code> = futures::future::join_all(callers)
        .await
        .into_iter()
        .flatten()
        .collect();
    stop.store(true, Ordering::Relaxed);
    cutter.await.expect("cutter");
    let failed: Vec<_> = codes.iter().filter(|c| **c != tonic::Code::Ok).collect();
    eprintln!(
        "{} calls, {} failed while connections were cut",
        codes.len(),
        failed.len()
    );
    assert!(
        failed.iter().all(|c| **c == tonic::Code::Unavailable),
        "every failure is UNAVAILABLE: {failed:?}"
    );
    assert!(
        !failed.is_empty(),
        "no call was caught by a cut: the test did not test anything"
    );
    // Afterwards the pool replaces the dead connections by itself.
    app.register("after-the-cuts@example.com", PASSWORD)
        .await
        .expect("recovered");
}
