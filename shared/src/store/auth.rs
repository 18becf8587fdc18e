//! Bearer tokens: a board token as created and as listed.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A board token as `nexus board-token list` shows it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardTokenInfo {
    /// The token's id.
    pub id: Uuid,
    /// Its label.
    pub label: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used (to the minute), if ever.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// How stale a board token's `last_used_at` may be: it is written at most once this often.
pub(crate) const LAST_USED_EVERY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// A newly created board token.
pub struct BoardToken {
    /// The token's id.
    pub id: Uuid,
    /// The token, in plaintext, shown once.
    pub token: String,
}

impl std::fmt::Debug for BoardToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoardToken")
            .field("id", &self.id)
            .field("token", &crate::crypto::Redacted)
            .finish()
    }
}
