//! Password reset: single use under concurrent redemption, self-service through a real SMTP
//! conversation with an in-process mail sink, and the disabled case without SMTP.

use std::{sync::Arc, time::Duration};

use auth_proto::pb;
use futures::future::join_all;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpListener,
    sync::Mutex,
};
use tonic::Code;

use crate::{admin::admin_of, every_backend, helpers::*};

every_backend!(
    a_reset_token_works_once_under_16_concurrent_redemptions,
    self_service_reset_mails_one_working_token,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_service_reset_without_smtp_is_failed_precondition() {
    let app = spawn_app(Db::Sqlite).await;
    app.register("lee@example.com", PASSWORD)
        .await
        .expect("register");
    let status = assert_code(
        app.client
            .clone()
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: "lee@example.com".into(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("SMTP"), "{}", status.message());
    assert_eq!(reason(&status).as_deref(), Some("RESET_DISABLED"));
}

async fn a_reset_token_works_once_under_16_concurrent_redemptions(db: Db) {
    let app = spawn_app(db).await;
    let (mut admin, _) = admin_of(&app, "root@example.com").await;
    let session = app.signed_up("mia@example.com").await;
    let user = app
        .find_user_by_email("mia@example.com")
        .await
        .expect("user");
    let reset = admin
        .issue_password_reset(pb::IssuePasswordResetRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("issue")
        .into_inner();
    // A weak password does not burn the token.
    assert_code(
        app.client
            .clone()
            .reset_password(pb::ResetPasswordRequest {
                reset_token: reset.reset_token.clone(),
                new_password: "short".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    let attempts = (0..16).map(|i| {
        let mut client = app.client.clone();
        let token = reset.reset_token.clone();
        async move {
            client
                .reset_password(pb::ResetPasswordRequest {
                    reset_token: token,
                    new_password: format!("new passphrase number {i}"),
                })
                .await
                .map(|r| (i, r.into_inner()))
        }
    });
    let results = join_all(attempts).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let (winner, response) = winners[0];
    assert_eq!(response.revoked_sessions, 1);
    for result in results.iter().filter(|r| r.is_err()) {
        let status = result.as_ref().expect_err("error");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(reason(status).as_deref(), Some("RESET_TOKEN_INVALID"));
    }
    // The winner's password works, every old session is gone, and there was one event.
    app.login(
        "mia@example.com",
        &format!("new passphrase number {winner}"),
    )
    .await
    .expect("login with the new password");
    assert_code(
        app.login("mia@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    assert_code(
        app.validate(&session.access_token).await,
        Code::Unauthenticated,
    );
    let after = app
        .find_user_by_email("mia@example.com")
        .await
        .expect("user");
    assert_eq!(after.version, user.version + 1, "one PasswordChanged");
    // Garbage tokens are refused without touching anything.
    for bad in ["", "short", &"!".repeat(43)] {
        assert_code(
            app.client
                .clone()
                .reset_password(pb::ResetPasswordRequest {
                    reset_token: bad.into(),
                    new_password: "whatever passphrase".into(),
                })
                .await,
            Code::Unauthenticated,
        );
    }
}

/// One received mail: envelope recipient and the DATA text.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub data: String,
}

/// A minimal SMTP server on a loopback port that accepts every mail and keeps it.
pub async fn smtp_sink() -> (String, Arc<Mutex<Vec<Mail>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&inbox);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let inbox = Arc::clone(&kept);
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut to = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        to = line[8..].trim().trim_matches(['<', '>']).to_owned();
                        b"250 ok\r\n"
                    } else if upper.starts_with("DATA") {
                        let _ = write.write_all(b"354 go ahead\r\n").await;
                        let mut data = String::new();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if line == "." {
                                break;
                            }
                            data.push_str(&line);
                            data.push('\n');
                        }
                        inbox.lock().await.push(Mail {
                            to: to.clone(),
                            data,
                        });
                        b"250 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = write.write_all(reply).await;
                }
            });
        }
    });
    (format!("smtp://{addr}"), inbox)
}

/// Mail through `smtp_url`, tokens bare in the text.
pub fn mail_settings(smtp_url: String) -> auth_server::mail::MailSettings {
    auth_server::mail::MailSettings {
        smtp_url,
        from: "Auth <auth@example.com>".into(),
        reset_link_template: String::new(),
        verify_link_template: String::new(),
    }
}

/// Waits up to 10 s until `inbox` holds `count` mails; returns them.
pub async fn mails(inbox: &Mutex<Vec<Mail>>, count: usize) -> Vec<Mail> {
    let mut waited = Duration::ZERO;
    while inbox.lock().await.len() < count && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    inbox.lock().await.clone()
}

pub fn token_in(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .find(|w| w.len() == 43)
        .map(str::to_owned)
}

async fn self_service_reset_mails_one_working_token(db: Db) {
    let (smtp_url, inbox) = smtp_sink().await;
    let app = spawn_app_with(db, |s| {
        s.protection.mail = Some(mail_settings(smtp_url));
    })
    .await;
    let session = app.signed_up("nina@example.com").await;
    let user = app
        .find_user_by_email("nina@example.com")
        .await
        .expect("user");
    let mut client = app.client.clone();
    for email in ["NINA@example.com", "nobody@example.com"] {
        client
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: email.into(),
            })
            .await
            .expect("always OK, known or not");
    }
    // The mail arrives (it is sent in the background); only the known address gets one.
    mails(&inbox, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = inbox.lock().await.clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].to, "nina@example.com");
    assert!(mails[0].data.contains("Subject: Reset your password"));
    let token = token_in(&mails[0].data).expect("a token in the mail");

    client
        .reset_password(pb::ResetPasswordRequest {
            reset_token: token.clone(),
            new_password: "fresh passphrase".into(),
        })
        .await
        .expect("the mailed token works");
    app.login("nina@example.com", "fresh passphrase")
        .await
        .expect("login");
    assert_code(
        app.validate(&session.access_token).await,
        Code::Unauthenticated,
    );
    assert_code(
        client
            .reset_password(pb::ResetPasswordRequest {
                reset_token: token,
                new_password: "second passphrase".into(),
            })
            .await,
        Code::Unauthenticated,
    );
    let kinds: Vec<String> = app
        .audit_rows()
        .await
        .into_iter()
        .filter(|r| r.subject_id.as_deref() == Some(user.id.as_str()))
        .map(|r| r.kind)
        .collect();
    assert!(
        kinds.contains(&"password_reset_issued".to_owned()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"password_reset_used".to_owned()),
        "{kinds:?}"
    );
}
