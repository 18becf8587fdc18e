//! [`ApiStorage`], declared apart from the other interfaces for its length (the same
//! [`storage!`] declaration: forwarded to each backend's inherent methods).

#[allow(clippy::wildcard_imports)]
use super::*;

storage! {
    backends: [PgStore, SqliteStore]
    interfaces: {

    /// What the API does: operators and tokens, companies, agents, issues, routines,
    /// triggers, runs and webhook acceptance.
    ApiStorage {
    // --- Operators and tokens ---

    /// The actor a bearer token (board token or agent key) stands for, if any.
    ///
    /// # Errors
    /// The database failed.
    async fn authenticate(&self, token: &str) -> StoreResult<Option<Actor>>;
    /// Creates a board token; the token itself is returned only here.
    ///
    /// # Errors
    /// The database failed.
    async fn create_board_token(&self, label: &str) -> StoreResult<BoardToken>;
    /// Accepts `token` as a board token from now on (idempotent).
    ///
    /// # Errors
    /// The database failed.
    async fn ensure_board_token(&self, token: &str, label: &str) -> StoreResult<()>;
    /// Whether any board token exists.
    ///
    /// # Errors
    /// The database failed.
    async fn has_board_token(&self) -> StoreResult<bool>;
    /// Every board token, oldest first (never the token itself).
    ///
    /// # Errors
    /// The database failed.
    async fn board_tokens(&self) -> StoreResult<Vec<BoardTokenInfo>>;
    /// Revokes a board token (refused by every replica from the next request); `false` when
    /// there is no such token.
    ///
    /// # Errors
    /// The database failed.
    async fn revoke_board_token(&self, id: Uuid) -> StoreResult<bool>;

    // --- Companies, projects, goals, the activity log ---

    /// Creates a company.
    ///
    /// # Errors
    /// The database failed.
    async fn create_company(&self, name: Title, actor: Actor) -> StoreResult<Company>;
    /// Every company.
    ///
    /// # Errors
    /// The database failed.
    async fn companies(&self) -> StoreResult<Vec<Company>>;
    /// One company.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn company(&self, id: Uuid) -> StoreResult<Company>;
    /// Creates a project.
    ///
    /// # Errors
    /// `NotFound` (company); the database failed.
    async fn create_project(&self, company_id: Uuid, name: Title, actor: Actor) -> StoreResult<Project>;
    /// A company's projects.
    ///
    /// # Errors
    /// The database failed.
    async fn projects(&self, company_id: Uuid) -> StoreResult<Vec<Project>>;
    /// Creates a goal.
    ///
    /// # Errors
    /// `NotFound` (company); the database failed.
    async fn create_goal(&self, company_id: Uuid, title: Title, actor: Actor) -> StoreResult<Goal>;
    /// A company's goals.
    ///
    /// # Errors
    /// The database failed.
    async fn goals(&self, company_id: Uuid) -> StoreResult<Vec<Goal>>;
    /// A company's most recent activity entries, newest first.
    ///
    /// # Errors
    /// The database failed.
    async fn activity(&self, company_id: Uuid, limit: i64) -> StoreResult<Vec<ActivityEntry>>;

    // --- Agents ---

    /// Creates an agent and its first API key.
    ///
    /// # Errors
    /// `NotFound` (company); the database failed.
    async fn create_agent(&self, company_id: Uuid, name: Title, wakeup: WakeupSpec, actor: Actor) -> StoreResult<CreatedAgent>;
    /// A company's agents.
    ///
    /// # Errors
    /// The database failed.
    async fn agents(&self, company_id: Uuid) -> StoreResult<Vec<Agent>>;
    /// One agent.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn agent(&self, id: Uuid) -> StoreResult<Agent>;
    /// Changes an agent (name, status, wake-up).
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    async fn update_agent(&self, id: Uuid, changes: AgentChanges, actor: Actor) -> StoreResult<UpdatedAgent>;
    /// Issues another API key for an agent.
    ///
    /// # Errors
    /// `NotFound`, `Refused` (terminated); the database failed.
    async fn issue_agent_key(&self, agent_id: Uuid, actor: Actor) -> StoreResult<IssuedKey>;
    /// Revokes one of an agent's keys.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn revoke_agent_key(&self, agent_id: Uuid, key_id: Uuid, actor: Actor) -> StoreResult<()>;

    // --- Issues and heartbeat runs ---

    /// Creates an issue (waking its assignee).
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
    async fn create_issue(&self, company_id: Uuid, new: NewIssue, actor: Actor) -> StoreResult<Issue>;
    /// One issue.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn issue(&self, id: Uuid) -> StoreResult<Issue>;
    /// One issue with its history.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn issue_with_events(&self, id: Uuid) -> StoreResult<IssueWithEvents>;
    /// A company's issues matching `filter`.
    ///
    /// # Errors
    /// The database failed.
    async fn issues(&self, company_id: Uuid, filter: IssueFilter) -> StoreResult<Vec<Issue>>;
    /// Moves an issue to `status` (and the routine run it belongs to along with it).
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    async fn set_issue_status(&self, id: Uuid, status: IssueStatus, actor: Actor) -> StoreResult<Issue>;
    /// One heartbeat run.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn heartbeat_run(&self, id: Uuid) -> StoreResult<HeartbeatRun>;
    /// An agent's heartbeat runs, newest first.
    ///
    /// # Errors
    /// The database failed.
    async fn agent_heartbeat_runs(&self, agent_id: Uuid, status: Option<HeartbeatStatus>, limit: i64) -> StoreResult<Vec<HeartbeatRun>>;
    /// An agent claims a queued heartbeat run.
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    async fn claim_heartbeat_run(&self, id: Uuid, actor: Actor) -> StoreResult<HeartbeatRun>;
    /// An agent finishes its running heartbeat run.
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    async fn finish_heartbeat_run(&self, id: Uuid, status: FinishStatus, summary: Option<Summary>, actor: Actor) -> StoreResult<HeartbeatRun>;

    // --- Routines and triggers ---

    /// Creates a routine.
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
    async fn create_routine(&self, company_id: Uuid, new: NewRoutine, actor: Actor) -> StoreResult<Routine>;
    /// One routine with its triggers.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn routine(&self, id: Uuid) -> StoreResult<Routine>;
    /// A company's routines matching `filter`.
    ///
    /// # Errors
    /// The database failed.
    async fn routines(&self, company_id: Uuid, filter: RoutineFilter) -> StoreResult<Vec<Routine>>;
    /// Changes a routine (pausing or resuming reschedules its triggers).
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
    async fn update_routine(&self, id: Uuid, changes: RoutineChanges, actor: Actor) -> StoreResult<Routine>;
    /// Pauses (`pause` given) or resumes (`None`) the routines of a company the selector
    /// matches that are active (to pause) or paused (to resume); returns those that changed.
    ///
    /// # Errors
    /// The database failed.
    async fn set_routines_paused(&self, company_id: Uuid, selector: RoutineSelector, pause: Option<Pause>, actor: Actor) -> StoreResult<Vec<Routine>>;
    /// Adds a trigger to a routine; a webhook trigger's secret is returned only here.
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    async fn create_trigger(&self, routine_id: Uuid, new: NewTrigger, actor: Actor) -> StoreResult<(Trigger, Option<SecretMaterial>)>;
    /// One trigger with its routine's company and agent.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn trigger(&self, id: Uuid) -> StoreResult<TriggerInRoutine>;
    /// Changes a trigger.
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    async fn update_trigger(&self, id: Uuid, changes: TriggerChanges, actor: Actor) -> StoreResult<Trigger>;
    /// Deletes a trigger (its runs keep their history).
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn delete_trigger(&self, id: Uuid, actor: Actor) -> StoreResult<()>;
    /// Replaces a webhook trigger's secret; the new one is returned only here.
    ///
    /// # Errors
    /// `NotFound`, `Refused` (not a webhook); the database failed.
    async fn rotate_trigger_secret(&self, id: Uuid, rotation: Rotation, actor: Actor) -> StoreResult<(Trigger, SecretMaterial)>;

    // --- Runs ---

    /// Accepts a manual or api run (with its dispatch job), or returns the run an idempotency
    /// key already created.
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    async fn accept_manual_run(&self, routine_id: Uuid, new: NewRun, actor: Actor) -> StoreResult<Accepted>;
    /// Creates a `backfill` run for every nominal fire of the routine's schedule triggers in
    /// the range that has no run yet, dispatched oldest first.
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
    async fn backfill(&self, routine_id: Uuid, range: BackfillRange, actor: Actor) -> StoreResult<Backfilled>;
    /// Accepts a webhook run for an authenticated trigger.
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    async fn accept_webhook_run(&self, trigger: &WebhookTrigger, new: NewRun) -> StoreResult<Accepted>;
    /// The webhook trigger with this public id, with its secret opened.
    ///
    /// # Errors
    /// The database failed, or a stored secret cannot be opened.
    async fn webhook_trigger(&self, public_id: &str) -> StoreResult<Option<WebhookTrigger>>;
    /// One run.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn run(&self, id: Uuid) -> StoreResult<Run>;
    /// A routine's runs, newest first by `triggered_at` (ties by id), after the run `before` in
    /// that order; a fire prepared ahead is neither listed nor found (`run`) before its time.
    ///
    /// # Errors
    /// The database failed.
    async fn runs(&self, routine_id: Uuid, before: Option<Uuid>, limit: i64) -> StoreResult<Vec<Run>>;

    // --- Live updates (see `store::events`) ---

    /// Numbers up to `limit` committed changes into the event log and deletes events older
    /// than [`super::EVENTS_KEPT`]; 0 at once when another process is relaying.
    ///
    /// # Errors
    /// The database failed (nothing is moved).
    async fn relay_events(&self, limit: i64) -> StoreResult<u64>;
    /// Whether jobs are due and waiting for a worker (as the scheduler's `jobs_waiting`): the
    /// relay of live updates yields to a burst being dispatched.
    ///
    /// # Errors
    /// The database failed.
    async fn queue_busy(&self) -> StoreResult<bool>;
    /// The newest number given and how far events have been deleted.
    ///
    /// # Errors
    /// The database failed.
    async fn event_log(&self) -> StoreResult<EventLogState>;
    /// Events numbered after `after` (of one company, or all), oldest first.
    ///
    /// # Errors
    /// The database failed.
    async fn events_after(&self, company_id: Option<Uuid>, after: i64, limit: i64) -> StoreResult<Vec<ChangeEvent>>;

    // --- System (the console) ---

    /// The scheduler that last took the lead, and its epoch.
    ///
    /// # Errors
    /// The database failed.
    async fn scheduler_leader(&self) -> StoreResult<SchedulerLeader>;
    /// The queue's depth, as the workers' `queue_depth` reads it (for the API, which holds no
    /// worker interface).
    ///
    /// # Errors
    /// The database failed.
    async fn queue_status(&self) -> StoreResult<Vec<QueueDepth>>;
    /// The on-time schedule fires whose instant is in `[from, to)`, and the lateness of the
    /// first `sample` of them that woke an agent.
    ///
    /// # Errors
    /// The database failed.
    async fn fire_lateness(&self, from: DateTime<Utc>, to: DateTime<Utc>, sample: i64) -> StoreResult<FireLateness>;

    // --- Notification channels ---

    /// Creates a notification channel; a `webhook` channel's secret is returned only here.
    ///
    /// # Errors
    /// `NotFound` (company), `InvalidReference` (`routineIds`), `Refused`; the database failed.
    async fn create_channel(&self, company_id: Uuid, new: NewChannel, actor: Actor) -> StoreResult<CreatedChannel>;
    /// A company's channels, oldest first.
    ///
    /// # Errors
    /// The database failed.
    async fn channels(&self, company_id: Uuid) -> StoreResult<Vec<NotificationChannel>>;
    /// One channel.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn channel(&self, id: Uuid) -> StoreResult<NotificationChannel>;
    /// Changes a channel.
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference` (`routineIds`); the database failed.
    async fn update_channel(&self, id: Uuid, changes: ChannelChanges, actor: Actor) -> StoreResult<NotificationChannel>;
    /// Deletes a channel; its undelivered notifications are dropped.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn delete_channel(&self, id: Uuid, actor: Actor) -> StoreResult<()>;
    /// Sends one `test` notification to a channel; returns its id.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    async fn test_channel(&self, id: Uuid, actor: Actor) -> StoreResult<Uuid>;
    /// A channel's notifications, newest first.
    ///
    /// # Errors
    /// The database failed.
    async fn channel_deliveries(&self, channel_id: Uuid, limit: i64) -> StoreResult<Vec<NotificationDelivery>>;

    // --- Webhook replays ---

    /// Whether webhook trigger `trigger_id` accepted a call signed `mac` that is still
    /// remembered (accepted signatures are written with their run, see
    /// [`Storage::accept_webhook_run`]).
    ///
    /// # Errors
    /// The database failed.
    async fn signature_seen(&self, trigger_id: Uuid, mac: Vec<u8>) -> StoreResult<bool>;
    }
    }
}
