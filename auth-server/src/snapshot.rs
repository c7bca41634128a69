//! `UserSnapshot`: the head sequence and every live user, organization and membership, read in
//! one repeatable-read transaction and streamed in pages, so a new mirror can load it and then
//! follow `UserEvents` from `as_of_sequence` without losing or repeating anything.

use tokio::sync::mpsc;

use crate::storage::{self, StorageError, Store, events::find_head_sequence};

/// Rows read per query.
const PAGE: u64 = 500;
/// Buffer between the reading task and the stream.
const BUFFER: usize = 64;

/// Reads a consistent snapshot, streamed in pages from one read transaction.
pub fn snapshot(store: Store) -> mpsc::Receiver<Result<SnapshotItem, StorageError>> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        if let Err(error) = send_snapshot(&store, &tx).await {
            let _ = tx.send(Err(error)).await;
        }
    });
    rx
}

/// One item of a snapshot stream.
#[derive(Debug)]
pub enum SnapshotItem {
    /// First: the sequence the snapshot reflects and how many of each follow.
    Header {
        /// Events up to and including this one are reflected.
        as_of_sequence: i64,
        /// Users that follow.
        user_count: u64,
        /// Organizations that follow the users.
        organization_count: u64,
        /// Memberships that follow the organizations.
        membership_count: u64,
    },
    /// One user.
    User(storage::UserRecord),
    /// One live organization.
    Organization(storage::organizations::OrganizationRecord),
    /// One live membership.
    Membership(storage::organizations::MembershipRecord),
}

async fn send_snapshot(
    store: &Store,
    out: &mpsc::Sender<Result<SnapshotItem, StorageError>>,
) -> Result<(), StorageError> {
    let tx = store.begin_snapshot().await?;
    let as_of_sequence = find_head_sequence(&tx).await?;
    let header = SnapshotItem::Header {
        as_of_sequence,
        user_count: storage::users::count_users(&tx).await?,
        organization_count: storage::organizations::count_organizations(&tx).await?,
        membership_count: storage::organizations::count_memberships(&tx).await?,
    };
    if out.send(Ok(header)).await.is_err() {
        return Ok(());
    }
    let mut after = String::new();
    loop {
        let page = storage::users::find_users_after(&tx, &after, PAGE).await?;
        let done = (page.len() as u64) < PAGE;
        for user in page {
            after.clone_from(&user.id);
            if out.send(Ok(SnapshotItem::User(user))).await.is_err() {
                return Ok(());
            }
        }
        if done {
            break;
        }
    }
    let mut after = String::new();
    loop {
        let page = storage::organizations::find_organizations_page(&tx, &after, PAGE, None).await?;
        let done = (page.len() as u64) < PAGE;
        for org in page {
            after.clone_from(&org.id);
            if out.send(Ok(SnapshotItem::Organization(org))).await.is_err() {
                return Ok(());
            }
        }
        if done {
            break;
        }
    }
    let (mut after_org, mut after_user) = (String::new(), String::new());
    loop {
        let page =
            storage::organizations::find_memberships_after(&tx, (&after_org, &after_user), PAGE)
                .await?;
        let done = (page.len() as u64) < PAGE;
        for m in page {
            after_org.clone_from(&m.organization_id);
            after_user.clone_from(&m.user_id);
            if out.send(Ok(SnapshotItem::Membership(m))).await.is_err() {
                return Ok(());
            }
        }
        if done {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
}
