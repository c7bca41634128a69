//! Server reflection answers in v1 and v1alpha, including the health service.

use tokio_stream::StreamExt as _;
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::*;

#[tokio::test]
async fn reflection_lists_services_in_v1_and_v1alpha() {
    let app = spawn_app(Db::Sqlite).await;
    let want = ["auth.v1.AuthService", "grpc.health.v1.Health"];

    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(channel(app.addr).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1 reflection")
        .into_inner();
    let response = stream.next().await.expect("a response").expect("ok");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected v1 response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in want {
        assert!(
            names.iter().any(|n| n == name),
            "v1 lacks {name}: {names:?}"
        );
    }

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(app.addr).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "auth.v1.AuthService".into(),
            ),
        ),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let response = stream.next().await.expect("a response").expect("ok");
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}
