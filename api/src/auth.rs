//! Authentication (bearer tokens → [`Actor`]) and the answers to the engine's access rules
//! (`nexus_shared::engine::access`).
//!
//! - No token, an unknown token, a revoked key or a terminated agent's key: 401, one body.
//! - Anything in a company the caller cannot see: 404, so existence never leaks.
//! - Visible but not allowed (an agent on a board-only endpoint): 403 with a sentence.

use axum::{extract::FromRequestParts, http::request::Parts};
use nexus_shared::{engine::access, model::Actor};
use uuid::Uuid;

use crate::{
    error::{ApiError, Found as _},
    state::AppState,
};

/// The credentials of an `Authorization: Bearer <credentials>` header; the scheme name is
/// case-insensitive (RFC 9110), and spaces after it are skipped.
pub(crate) fn bearer_credentials(value: &axum::http::HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

/// The authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Actor);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(bearer_credentials)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 512)
            .ok_or_else(ApiError::unauthorized)?;
        match state.store.authenticate(token).await? {
            Some(actor) => Ok(Self(actor)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

impl Auth {
    /// 403 unless the caller holds a board token.
    ///
    /// # Errors
    /// 403 with `what` in the sentence.
    pub fn require_board(self, what: &str) -> Result<(), ApiError> {
        access::board(self.0)
            .map_err(|_| ApiError::forbidden(format!("only a board token may {what}")))
    }

    /// The calling agent's id; 403 for a board token.
    ///
    /// # Errors
    /// 403 when the caller is not an agent.
    pub fn require_agent(self, what: &str) -> Result<Uuid, ApiError> {
        access::agent(self.0).map_err(|_| ApiError::forbidden(format!("only an agent may {what}")))
    }

    /// 404 unless the caller may see the company's rows.
    ///
    /// # Errors
    /// 404 naming `what`.
    pub fn see(self, company_id: Uuid, what: &str) -> Result<(), ApiError> {
        access::sees(self.0, company_id).map_err(|_| ApiError::not_found(what))
    }

    /// 404 unless the company exists and the caller may see it.
    ///
    /// # Errors
    /// 404, or the store failed.
    pub async fn see_company(self, state: &AppState, company_id: Uuid) -> Result<(), ApiError> {
        self.see(company_id, "company")?;
        if self.is_board() {
            state.store.company(company_id).await.found("company")?;
        }
        Ok(())
    }

    /// 403 unless the caller may manage a routine assigned to `assignee`: the board, or that
    /// agent itself.
    ///
    /// # Errors
    /// 403 saying agents manage only their own routines.
    pub fn manage_routine(self, assignee: Uuid) -> Result<(), ApiError> {
        access::manage_routine(self.0, assignee).map_err(|d| ApiError::forbidden(d.to_string()))
    }

    /// 403 when an agent tries to assign a routine to another agent.
    ///
    /// # Errors
    /// 403 saying only the board reassigns.
    pub fn assign_routine_to(self, assignee: Uuid) -> Result<(), ApiError> {
        access::assign_routine_to(self.0, assignee).map_err(|d| ApiError::forbidden(d.to_string()))
    }

    /// Whether the caller holds a board token.
    #[must_use]
    pub fn is_board(self) -> bool {
        access::board(self.0).is_ok()
    }

    /// Whether the caller is the agent `agent_id`.
    #[must_use]
    pub fn is_agent(self, agent_id: Uuid) -> bool {
        access::is_agent(self.0, agent_id)
    }
}
