//! The caller's own user (`/v1/users/me`, the SDK's `get_current_user`
//! and `instavm whoami`).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::CallerUser;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentUser {
    /// Stable for the account and email.
    pub id: String,
    pub email: String,
    /// The email's local part.
    pub name: String,
    /// Always true: a user is an email an account's key acts for, and the
    /// account vouches for it.
    pub is_verified: bool,
    /// `admin` (the account's administrator) or `member`.
    pub role: String,
    /// When the user's oldest key was made.
    pub created_at: String,
    pub account_id: String,
    pub account_name: String,
}

#[utoipa::path(get, path = "/v1/users/me", tag = "users",
    responses((status = 200, body = CurrentUser)))]
pub(crate) async fn me(
    State(state): State<AppState>,
    CallerUser(who): CallerUser,
) -> Result<Json<CurrentUser>, ApiError> {
    let user = state.service.accounts().user(&who).await?;
    let name = user
        .email
        .split_once('@')
        .map_or(user.email.as_str(), |(local, _)| local)
        .to_owned();
    Ok(Json(CurrentUser {
        id: user.id,
        name,
        is_verified: true,
        role: user.role.as_str().to_owned(),
        created_at: user.created_at.to_rfc3339(),
        account_id: user.account.id.to_string(),
        account_name: user.account.name,
        email: user.email,
    }))
}
