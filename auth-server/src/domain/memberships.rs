//! What other flows need of memberships: the memberships an access token carries, and ending
//! every membership of an organization or a user inside a [`Change`].

use super::Change;
use crate::{
    error::AuthError,
    storage::{
        self, EventKind,
        organizations::{MembershipRecord, MembershipsOf, OrganizationRecord},
    },
    tokens::TokenMemberships,
};

/// Most memberships an access token carries; see [`token_memberships`].
pub const MAX_TOKEN_MEMBERSHIPS: usize = 32;
/// Most bytes of JSON the memberships in a token may take.
pub const MAX_TOKEN_MEMBERSHIP_BYTES: usize = 2048;

/// The memberships a token issued now carries: the user's live memberships in live
/// organizations, by organization id, until the count or byte cap is reached.
pub(super) async fn token_memberships(
    conn: &impl sea_orm::ConnectionTrait,
    user_id: &str,
) -> Result<TokenMemberships, AuthError> {
    // A live membership always has a live organization: deleting one removes its memberships
    // in the same transaction, and AddMember share-locks the organization. One query.
    let live = storage::organizations::find_user_memberships(conn, user_id).await?;
    let mut out = TokenMemberships::default();
    let mut bytes = 0;
    for m in live {
        // `"<id>":["a","b"],` as JSON.
        let size = m.organization_id.len() + 6 + m.roles.iter().map(|r| r.len() + 3).sum::<usize>();
        if out.organizations.len() == MAX_TOKEN_MEMBERSHIPS
            || bytes + size > MAX_TOKEN_MEMBERSHIP_BYTES
        {
            out.truncated = true;
            break;
        }
        bytes += size;
        out.organizations.insert(m.organization_id, m.roles);
    }
    Ok(out)
}

/// Removes every live membership of `of` in `change`, one `MembershipRemoved` each; how many.
pub(super) async fn remove_memberships(
    change: &mut Change,
    of: MembershipsOf<'_>,
) -> Result<usize, AuthError> {
    let removed = storage::organizations::remove_all_memberships(change.db(), of).await?;
    for m in &removed {
        change.membership_event(EventKind::MembershipRemoved, m);
    }
    Ok(removed.len())
}

/// A user's membership with its organization.
#[derive(Debug, Clone)]
pub struct UserOrganization {
    /// The organization.
    pub organization: OrganizationRecord,
    /// The membership.
    pub membership: MembershipRecord,
}

/// Every live organization `user_id` belongs to, with the membership, by organization id.
pub(super) async fn user_organizations(
    conn: &impl sea_orm::ConnectionTrait,
    user_id: &str,
) -> Result<Vec<UserOrganization>, AuthError> {
    let memberships = storage::organizations::find_user_memberships(conn, user_id).await?;
    let ids: Vec<String> = memberships
        .iter()
        .map(|m| m.organization_id.clone())
        .collect();
    let mut orgs = storage::organizations::find_organizations_by_ids(conn, &ids).await?;
    Ok(memberships
        .into_iter()
        .filter_map(|membership| {
            orgs.remove(&membership.organization_id)
                .map(|organization| UserOrganization {
                    organization,
                    membership,
                })
        })
        .collect())
}
