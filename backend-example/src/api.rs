//! The HTTP API: `GET /me`, `PATCH /me` and `GET /orgs/{id}` behind the auth-client
//! [`AuthLayer`], and the open `GET /health/sync`.
//!
//! `GET /orgs/{id}` answers members only, decided by the mirror (`user_companies`), which
//! follows the auth service within a second: a member removed a moment ago is refused at once,
//! even while the token they hold still lists the membership until its next refresh. A
//! non-member gets 403 whether or not the company exists, so its existence does not leak.

use std::{sync::Arc, sync::atomic::Ordering};

use auth_client::{AuthLayer, Principal, Subscriber, Validator};
use axum::{
    Extension, Json, Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sea_orm::{DatabaseConnection, DbErr};
use serde_json::{Map, Value, json};

use crate::{db, orgs, sync::SyncStatus};

/// Fields only auth-server may write.
const AUTH_OWNED: [&str; 8] = [
    "id",
    "email",
    "email_verified",
    "display_name",
    "roles",
    "disabled",
    "version",
    "deleted",
];

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The backend's database.
    pub db: DatabaseConnection,
    /// Sync progress.
    pub sync: Arc<SyncStatus>,
    /// The auth service, with the mirror's credentials: fetches a user not mirrored yet.
    pub auth: Arc<Subscriber>,
}

/// Errors of the API, each with its status; internals go to the log only.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller asked for something invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The caller is valid but not mirrored yet, and the auth service could not be asked.
    #[error("profile not synchronised yet")]
    NotMirrored,
    /// The caller's account was deleted.
    #[error("account deleted")]
    Gone,
    /// The caller may not see this.
    #[error("not a member of this organization")]
    Forbidden,
    /// Database failure.
    #[error("database error")]
    Db(#[from] DbErr),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotMirrored => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Gone => StatusCode::NOT_FOUND,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Db(error) => {
                tracing::error!(error.message = %error, "database error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if matches!(self, ApiError::NotMirrored) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The router: `/me` guarded by `validator`, `/health/sync` open.
pub fn router(state: AppState, validator: Validator) -> Router {
    let guarded = Router::new()
        .route("/me", get(get_me).patch(patch_me))
        .route("/orgs/{id}", get(get_org))
        .layer(AuthLayer::new(validator));
    Router::new()
        .route("/health/sync", get(health))
        .merge(guarded)
        .with_state(state)
}

fn profile(row: &db::userbase::Model) -> Value {
    let roles: Value = serde_json::from_str(&row.roles).unwrap_or_else(|_| json!([]));
    let preferences: Value = serde_json::from_str(&row.preferences).unwrap_or_else(|_| json!({}));
    json!({
        "id": row.id,
        "email": row.email,
        "email_verified": row.email_verified,
        "display_name": row.display_name,
        "roles": roles,
        "disabled": row.disabled,
        "version": row.version,
        "plan_tier": row.plan_tier,
        "preferences": preferences,
    })
}

/// The caller's row. A user the stream has not brought yet (created a moment ago) is fetched
/// from the auth service with `GetUser` and stored as the stream would store it (the version
/// decides, so the stream's later copy of the same change is a no-op).
async fn mirrored(state: &AppState, user_id: &str) -> Result<db::userbase::Model, ApiError> {
    let found = |row: Option<db::userbase::Model>| match row {
        Some(row) if row.deleted => Err(ApiError::Gone),
        Some(row) => Ok(Some(row)),
        None => Ok(None),
    };
    if let Some(row) = found(db::find_user(&state.db, user_id).await?)? {
        return Ok(row);
    }
    match state.auth.get_user(user_id).await {
        Ok(user) => {
            if let Err(error) = db::upsert_user(&state.db, &user, false).await {
                // The stream may have inserted it meanwhile; only a row still missing is an error.
                tracing::debug!(error.message = %error, "fetched user not stored");
            }
            found(db::find_user(&state.db, user_id).await?)?.ok_or(ApiError::NotMirrored)
        }
        Err(error) if error.is_not_found() => Err(ApiError::Gone),
        Err(error) => {
            tracing::warn!(error.message = %error, "cannot fetch a user not mirrored yet");
            Err(ApiError::NotMirrored)
        }
    }
}

fn json_or(text: &str, default: Value) -> Value {
    serde_json::from_str(text).unwrap_or(default)
}

async fn get_me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let row = mirrored(&state, &principal.user_id).await?;
    let mut me = profile(&row);
    let organizations: Vec<Value> = orgs::find_user_companies(&state.db, &row.id)
        .await?
        .into_iter()
        .map(|(membership, company)| {
            json!({
                "id": company.id,
                "name": company.name,
                "slug": company.slug,
                "roles": json_or(&membership.roles, json!([])),
                "pinned": membership.pinned,
            })
        })
        .collect();
    me["organizations"] = Value::Array(organizations);
    Ok(Json(me))
}

async fn get_org(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let membership = orgs::find_membership(&state.db, &id, &principal.user_id)
        .await?
        .ok_or(ApiError::Forbidden)?;
    let company = orgs::find_company(&state.db, &id)
        .await?
        .ok_or(ApiError::Forbidden)?;
    Ok(Json(json!({
        "id": company.id,
        "name": company.name,
        "slug": company.slug,
        "metadata": json_or(&company.metadata, json!({})),
        "settings": json_or(&company.settings, json!({})),
        "roles": json_or(&membership.roles, json!([])),
    })))
}

async fn patch_me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let mut plan_tier = None;
    let mut preferences = None;
    for (key, value) in body {
        match key.as_str() {
            "plan_tier" => match value {
                Value::String(tier) if !tier.is_empty() && tier.len() <= 64 => {
                    plan_tier = Some(tier)
                }
                _ => {
                    return Err(ApiError::BadRequest(
                        "plan_tier must be a non-empty string of at most 64 bytes".into(),
                    ));
                }
            },
            "preferences" => match value {
                Value::Object(map) => preferences = Some(Value::Object(map).to_string()),
                _ => {
                    return Err(ApiError::BadRequest(
                        "preferences must be a JSON object".into(),
                    ));
                }
            },
            owned if AUTH_OWNED.contains(&owned) => {
                return Err(ApiError::BadRequest(format!(
                    "{owned} is owned by auth-server and cannot be changed here"
                )));
            }
            other => return Err(ApiError::BadRequest(format!("unknown field {other}"))),
        }
    }
    mirrored(&state, &principal.user_id).await?;
    db::update_backend_fields(&state.db, &principal.user_id, plan_tier, preferences).await?;
    get_me(State(state), Extension(principal)).await
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let sync = db::find_sync_state(&state.db).await?;
    let mirrored_users = db::count_users(&state.db).await?;
    let (mirrored_companies, mirrored_memberships) = orgs::count(&state.db).await?;
    let head = state
        .sync
        .head_sequence
        .load(Ordering::Relaxed)
        .max(sync.last_sequence);
    Ok(Json(json!({
        "last_applied_sequence": sync.last_sequence,
        "auth_head_sequence": head,
        "lag": head - sync.last_sequence,
        "last_event_at_ms": sync.last_event_at,
        "streaming": state.sync.connected.load(Ordering::Relaxed),
        "resumed_from": state.sync.resumed_from.load(Ordering::Relaxed),
        "mirrored_users": mirrored_users,
        "mirrored_companies": mirrored_companies,
        "mirrored_memberships": mirrored_memberships,
        "snapshot_users": sync.snapshot_users,
    })))
}
