//! Heartbeat runs: a row as both backends read it.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::model::{HeartbeatContext, HeartbeatRun, HeartbeatStatus};

pub(crate) use crate::engine::dispatch::NewHeartbeat;

#[derive(sqlx::FromRow)]
pub(crate) struct HeartbeatRow {
    pub(crate) id: Uuid,
    pub(crate) company_id: Uuid,
    pub(crate) agent_id: Uuid,
    pub(crate) issue_id: Uuid,
    pub(crate) routine_run_id: Option<Uuid>,
    pub(crate) status: HeartbeatStatus,
    pub(crate) context: Json<HeartbeatContext>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) summary: Option<String>,
}

impl From<HeartbeatRow> for HeartbeatRun {
    fn from(row: HeartbeatRow) -> Self {
        Self {
            id: row.id,
            company_id: row.company_id,
            agent_id: row.agent_id,
            issue_id: row.issue_id,
            routine_run_id: row.routine_run_id,
            status: row.status,
            context: row.context.0,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            summary: row.summary,
        }
    }
}
