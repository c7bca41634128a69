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
