//! gRPC-Web over HTTP/1.1 on the gRPC listener, as a browser sends it (raw requests on a real
//! socket), and CORS from the `--cors-allow-origin` allowlist: preflights, allowed origins,
//! refused origins (HTTP 403, no handler runs), and requests without an origin.

use std::{collections::HashMap, net::SocketAddr};

use auth_proto::pb;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::*;

const ALLOWED: &str = "http://127.0.0.1:8123";
const OTHER: &str = "http://evil.example:8123";

/// An HTTP/1.1 answer: status, headers (lower-case names), body with chunking undone.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return body;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..end]).expect("ascii").trim(), 16)
                .expect("chunk size");
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

async fn http1(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.expect("send");
    socket.write_all(body).await.expect("send body");
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A gRPC-Web call: one data frame in; the data frame's message and the trailers out.
async fn grpc_web<M: prost::Message>(
    addr: SocketAddr,
    method: &str,
    message: &M,
    origin: Option<&str>,
    token: Option<&str>,
) -> (Answer, Vec<u8>, HashMap<String, String>) {
    let bytes = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(bytes.len()).expect("len").to_be_bytes());
    body.extend_from_slice(&bytes);
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("Content-Type", "application/grpc-web+proto"),
        ("X-Grpc-Web", "1"),
    ];
    if let Some(origin) = origin {
        headers.push(("Origin", origin));
    }
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer));
    }
    let answer = http1(
        addr,
        "POST",
        &format!("/auth.v1.AuthService/{method}"),
        &headers,
        &body,
    )
    .await;
    // Frames: 0x00 data, 0x80 trailers (`name: value\r\n` lines).
    let mut data = Vec::new();
    let mut trailers = HashMap::new();
    let mut rest = answer.body.as_slice();
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        let payload = &rest[5..5 + len];
        if rest[0] & 0x80 == 0 {
            data = payload.to_vec();
        } else {
            for line in String::from_utf8_lossy(payload).split("\r\n") {
                if let Some((n, v)) = line.split_once(':') {
                    trailers.insert(n.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
        }
        rest = &rest[5 + len..];
    }
    // A trailers-only answer puts the status in the headers.
    for name in ["grpc-status", "grpc-message"] {
        if let Some(v) = answer.header(name) {
            trailers.insert(name.to_owned(), v.to_owned());
        }
    }
    (answer, data, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_call_over_grpc_web_from_allowed_origins_only() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.allow_registration = true;
        s.cors_origins =
            auth_server::cors::AllowedOrigins::parse(&[ALLOWED.to_owned()]).expect("origin");
    })
    .await;
    let addr = app.addr;

    // Preflight from the allowed origin: 204 with what the browser needs.
    let preflight = http1(
        addr,
        "OPTIONS",
        "/auth.v1.AuthService/Register",
        &[
            ("Origin", ALLOWED),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type,x-grpc-web,x-user-agent",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(ALLOWED)
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    let allowed_headers = preflight
        .header("access-control-allow-headers")
        .expect("allow headers");
    for h in [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "authorization",
    ] {
        assert!(allowed_headers.contains(h), "{h}: {allowed_headers}");
    }
    // Preflight from another origin: 403, nothing that lets the browser go on.
    let refused = http1(
        addr,
        "OPTIONS",
        "/auth.v1.AuthService/Register",
        &[("Origin", OTHER), ("Access-Control-Request-Method", "POST")],
        b"",
    )
    .await;
    assert_eq!(refused.status, 403);
    assert!(refused.header("access-control-allow-origin").is_none());

    // Register, Login and GetMe from the allowed origin.
    let register = pb::RegisterRequest {
        email: "web@example.com".into(),
        password: PASSWORD.into(),
        display_name: "Web".into(),
    };
    let (answer, data, trailers) = grpc_web(addr, "Register", &register, Some(ALLOWED), None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        trailers.get("grpc-status").map(String::as_str),
        Some("0"),
        "{trailers:?}"
    );
    assert_eq!(answer.header("access-control-allow-origin"), Some(ALLOWED));
    let exposed = answer
        .header("access-control-expose-headers")
        .expect("expose");
    for h in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(h), "{h}: {exposed}");
    }
    let user = pb::RegisterResponse::decode(data.as_slice())
        .expect("decode")
        .user
        .expect("user");
    assert_eq!(user.email, "web@example.com");
    let login = pb::LoginRequest {
        email: "web@example.com".into(),
        password: PASSWORD.into(),
    };
    let (_, data, _) = grpc_web(addr, "Login", &login, Some(ALLOWED), None).await;
    let session = pb::LoginResponse::decode(data.as_slice()).expect("login");
    let (_, data, trailers) = grpc_web(
        addr,
        "GetMe",
        &pb::GetMeRequest {},
        Some(ALLOWED),
        Some(&session.access_token),
    )
    .await;
    assert_eq!(trailers.get("grpc-status").map(String::as_str), Some("0"));
    let me = pb::GetMeResponse::decode(data.as_slice())
        .expect("me")
        .user
        .expect("user");
    assert_eq!(me.id, user.id);
    // An error reaches the page with its code and details.
    let wrong = pb::LoginRequest {
        email: "web@example.com".into(),
        password: "wrong password".into(),
    };
    let (answer, _, trailers) = grpc_web(addr, "Login", &wrong, Some(ALLOWED), None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        trailers.get("grpc-status").map(String::as_str),
        Some("16"),
        "{trailers:?}"
    );
    assert!(
        answer.header("grpc-status-details-bin").is_some()
            || trailers.contains_key("grpc-status-details-bin")
    );

    // The same call from another origin: 403 before any handler, so no account is made.
    let other = pb::RegisterRequest {
        email: "evil@example.com".into(),
        password: PASSWORD.into(),
        display_name: String::new(),
    };
    let (answer, _, _) = grpc_web(addr, "Register", &other, Some(OTHER), None).await;
    assert_eq!(answer.status, 403);
    assert!(answer.header("access-control-allow-origin").is_none());
    assert!(app.find_user_by_email("evil@example.com").await.is_none());

    // Without an Origin (a native gRPC-Web client, a proxy's health check): served, no CORS.
    let (answer, data, trailers) = grpc_web(
        addr,
        "GetPublicKeys",
        &pb::GetPublicKeysRequest {},
        None,
        None,
    )
    .await;
    assert_eq!(trailers.get("grpc-status").map(String::as_str), Some("0"));
    assert!(answer.header("access-control-allow-origin").is_none());
    assert!(
        !pb::GetPublicKeysResponse::decode(data.as_slice())
            .expect("keys")
            .keys
            .is_empty()
    );
    // Plain HTTP/2 gRPC is unaffected.
    app.login("web@example.com", PASSWORD)
        .await
        .expect("grpc login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_allowlist_every_browser_origin_is_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let (answer, _, _) = grpc_web(
        app.addr,
        "GetPublicKeys",
        &pb::GetPublicKeysRequest {},
        Some(ALLOWED),
        None,
    )
    .await;
    assert_eq!(answer.status, 403);
    let (answer, _, trailers) = grpc_web(
        app.addr,
        "GetPublicKeys",
        &pb::GetPublicKeysRequest {},
        None,
        None,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(trailers.get("grpc-status").map(String::as_str), Some("0"));
}
