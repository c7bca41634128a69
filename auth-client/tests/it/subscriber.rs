//! The Subscriber resumes from a cursor, survives a server restart, and redelivers what its
//! handler refused: nothing missed, nothing doubled.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use auth_client::{Credentials, Subscriber, SubscriberError};

use crate::helpers::*;

async fn wait_for(seen: &Mutex<Vec<u64>>, last: u64) {
    for _ in 0..200 {
        if seen
            .lock()
            .expect("lock")
            .last()
            .is_some_and(|s| *s >= last)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "events up to {last} never arrived: {:?}",
        seen.lock().expect("lock")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_resumes_and_reconnects_across_a_server_restart() {
    let mut server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    server
        .account_with_roles("mirror@example.com", &["events.subscriber"])
        .await;
    let subscriber = Arc::new(
        Subscriber::new(
            server.client(),
            Credentials::Password {
                email: "mirror@example.com".into(),
                password: PASSWORD.into(),
            },
        )
        .with_backoff(Duration::from_millis(50), Duration::from_millis(200)),
    );
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let failed_once = Arc::new(Mutex::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (subscriber, seen, failed_once) = (
            Arc::clone(&subscriber),
            Arc::clone(&seen),
            Arc::clone(&failed_once),
        );
        tokio::spawn(async move {
            subscriber
                .run(
                    0,
                    move |event| {
                        let (seen, failed_once) = (Arc::clone(&seen), Arc::clone(&failed_once));
                        async move {
                            // The handler refuses sequence 3 once: it must come again, once.
                            let mut failed = failed_once.lock().expect("lock");
                            if event.sequence == 3 && !*failed {
                                *failed = true;
                                return Err("database busy");
                            }
                            seen.lock().expect("lock").push(event.sequence);
                            Ok(())
                        }
                    },
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
        })
    };
    for i in 0..3 {
        server.user(&format!("before{i}@example.com")).await;
    }
    wait_for(&seen, 4).await;

    server.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.resume().await;
    for i in 0..3 {
        server.user(&format!("after{i}@example.com")).await;
    }
    wait_for(&seen, 7).await;
    let _ = stop.send(());
    let cursor = task.await.expect("task").expect("subscriber");
    assert_eq!(cursor, 7);
    assert_eq!(
        *seen.lock().expect("lock"),
        (1..=7).collect::<Vec<u64>>(),
        "missed or doubled"
    );

    // A new run from a stored cursor gets exactly the rest.
    let rest = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&rest);
    let run = subscriber.run(
        5,
        move |event| {
            collected.lock().expect("lock").push(event.sequence);
            async { Ok::<(), std::convert::Infallible>(()) }
        },
        tokio::time::sleep(Duration::from_millis(800)),
    );
    assert_eq!(run.await.expect("run"), 7);
    assert_eq!(*rest.lock().expect("lock"), [6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_gives_up_only_on_refusals_and_bootstraps_from_a_snapshot() {
    let server = Server::start(TestDatabase::Sqlite, |_| {}).await;
    server.user("plain@example.com").await;
    let plain = Subscriber::new(
        server.client(),
        Credentials::Password {
            email: "plain@example.com".into(),
            password: PASSWORD.into(),
        },
    );
    let refused = plain
        .run(
            0,
            |_| async { Ok::<(), std::convert::Infallible>(()) },
            std::future::pending(),
        )
        .await;
    assert!(
        matches!(refused, Err(SubscriberError::Refused(_))),
        "{refused:?}"
    );

    server
        .account_with_roles("mirror@example.com", &["admin"])
        .await;
    let mirror = Subscriber::new(
        server.client(),
        Credentials::Password {
            email: "mirror@example.com".into(),
            password: PASSWORD.into(),
        },
    );
    let ahead = mirror
        .run(
            1000,
            |_| async { Ok::<(), std::convert::Infallible>(()) },
            std::future::pending(),
        )
        .await;
    assert!(
        matches!(ahead, Err(SubscriberError::CursorAhead { cursor: 1000 })),
        "{ahead:?}"
    );
    let snapshot = mirror.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.as_of_sequence, 2);
    let mut emails: Vec<String> = snapshot.users.into_iter().map(|u| u.email).collect();
    emails.sort();
    assert_eq!(emails, ["mirror@example.com", "plain@example.com"]);
}
