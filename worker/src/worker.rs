//! The job loop: claim one job, run its handler, record the outcome. [`Worker::run_once`] is
//! the single step tests drive; [`Worker::run`] wraps it in concurrent loops that wake on
//! `NOTIFY` and poll as a fallback, plus a maintenance loop (expired leases, heartbeat-run
//! timeouts).

use std::{sync::Arc, time::Duration};

use nexus_shared::{
    Store,
    engine::tasks,
    model::RunStatus,
    queue::{DELIVER_WAKEUP, DISPATCH_RUN, Job, JobError, Queue, RetryOutcome, Task},
    store::{Attempt, Taken, Topic, WorkerStorage},
};
use tokio::sync::watch;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    notify,
    wakeup::{self, DeliveryError},
};

/// Tunables of a worker.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Jobs handled at once.
    pub concurrency: usize,
    /// Most jobs one loop claims at once; dispatch jobs among them are dispatched together.
    pub batch: usize,
    /// Lease of a claimed job.
    pub lease: Duration,
    /// Poll interval when no notification arrives.
    pub poll_interval: Duration,
    /// Interval of the maintenance pass.
    pub maintenance_interval: Duration,
    /// Heartbeat runs queued or running longer than this become `timed_out`.
    pub heartbeat_timeout: Duration,
    /// Timeout of one wake-up request.
    pub wakeup_timeout: Duration,
    /// Wake idle loops on `NOTIFY` (turn off only to measure the polling fallback).
    pub notifications: bool,
    /// Whether wake-ups may reach loopback, link-local or private addresses
    /// (`NEXUS_ALLOW_PRIVATE_URLS`; see `nexus_shared::outbound`).
    pub allow_private_urls: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            batch: 100,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            maintenance_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(3600),
            wakeup_timeout: Duration::from_secs(10),
            notifications: true,
            allow_private_urls: false,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Jobs were claimed and handled (whatever their results): how many.
    Worked(usize),
    /// No job was due.
    Idle,
}

/// A worker: claims and handles jobs.
#[derive(Debug, Clone)]
pub struct Worker {
    store: Arc<dyn WorkerStorage>,
    queue: Queue,
    http: reqwest::Client,
    settings: Settings,
}

impl Worker {
    /// A worker over `store`, claiming as `owner`.
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS provider).
    pub fn new(store: Store, owner: String, settings: Settings) -> anyhow::Result<Self> {
        nexus_shared::telemetry::install_tls_provider();
        let mut http = reqwest::Client::builder()
            .timeout(settings.wakeup_timeout)
            .connect_timeout(settings.wakeup_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nexus-routines/", env!("CARGO_PKG_VERSION")));
        if let Some(resolver) = nexus_shared::outbound::resolver(settings.allow_private_urls) {
            // Names are resolved through the outbound address rules: the address checked is
            // the address connected to.
            http = http.dns_resolver(resolver);
        }
        let http = http.build()?;
        let queue = Queue::new(&store, owner, settings.lease);
        Ok(Self {
            store: store.worker(),
            queue,
            http,
            settings,
        })
    }

    /// The queue handle (its owner name identifies this worker's leases).
    #[must_use]
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Takes due jobs (up to the batch size) and handles them. First dispatch attempts are
    /// dispatched in the transaction that takes them (no lease, no second transaction); the
    /// other jobs taken are claimed with a lease and handled here: dispatch jobs together in
    /// one transaction when there are several, others one by one. If dispatching as they are
    /// taken fails, nothing was taken: the loop claims with a lease instead and handles each
    /// job as a retry would, so one bad run cannot hold back the others.
    ///
    /// # Errors
    /// The database failed while claiming or recording the outcome.
    pub async fn run_once(&self) -> anyhow::Result<Outcome> {
        let limit = i64::try_from(self.settings.batch.max(1)).unwrap_or(1);
        let mut taking = std::time::Instant::now();
        let taken = match self
            .queue
            .take(limit)
            .instrument(tracing::debug_span!("take"))
            .await
        {
            Ok(taken) => taken,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "dispatching jobs as they were taken failed; claiming them with a lease"
                );
                // Timed from here: the claim histogram below measures this claim alone.
                taking = std::time::Instant::now();
                let claimed = self
                    .queue
                    .claim(limit)
                    .instrument(tracing::debug_span!("claim"))
                    .await?;
                Taken {
                    claimed,
                    ..Taken::default()
                }
            }
        };
        let took = taking.elapsed().as_secs_f64();
        if taken.is_empty() {
            metrics::histogram!("nexus_job_claim_seconds").record(took);
            return Ok(Outcome::Idle);
        }
        let now = self.store.clock().now();
        for job in taken.dispatched.iter().chain(&taken.claimed) {
            let pickup = (now - job.run_at).as_seconds_f64().max(0.0);
            metrics::histogram!("nexus_job_pickup_seconds", "kind" => job.task.kind().to_owned())
                .record(pickup);
        }
        let handled = taken.len();
        if taken.dispatched.is_empty() {
            metrics::histogram!("nexus_job_claim_seconds").record(took);
        } else {
            record_batch(taken.dispatched.len(), &taken.outcomes, took);
            // The dispatch has committed; its span marks it in the request's trace when it was
            // one job (a batch, as below, is one span of its own).
            let span = match taken.dispatched.as_slice() {
                [job] => job_span(job),
                jobs => tracing::info_span!("dispatch_batch", jobs = jobs.len()),
            };
            span.in_scope(|| {
                tracing::info!(
                    jobs = taken.dispatched.len(),
                    runs = taken.outcomes.len(),
                    "runs dispatched as their jobs were taken"
                );
            });
        }
        let (dispatches, others): (Vec<Job>, Vec<Job>) = taken
            .claimed
            .into_iter()
            .partition(|j| matches!(j.task, Task::DispatchRun { .. }));
        let singles = if dispatches.len() > 1 {
            self.dispatch_batch(dispatches).await?
        } else {
            dispatches
        };
        for job in singles.into_iter().chain(others) {
            let span = job_span(&job);
            self.process(job).instrument(span).await?;
        }
        Ok(Outcome::Worked(handled))
    }

    /// Dispatches several runs in one fenced transaction. When the batch fails, nothing of it
    /// is kept and its jobs are returned to be handled one by one, so one bad run cannot hold
    /// back the others (and retries and failures are per job).
    async fn dispatch_batch(&self, jobs: Vec<Job>) -> anyhow::Result<Vec<Job>> {
        let started = std::time::Instant::now();
        let span = tracing::info_span!("dispatch_batch", jobs = jobs.len());
        let attempt = async {
            let dispatched = self.queue.dispatch(&jobs).await?;
            if dispatched.held.len() < jobs.len() {
                tracing::warn!(
                    lost = jobs.len() - dispatched.held.len(),
                    "leases lost before dispatch; other workers have those jobs"
                );
            }
            anyhow::Ok((dispatched.held.len(), dispatched.outcomes))
        }
        .instrument(span)
        .await;
        match attempt {
            Ok((completed, outcomes)) => {
                record_batch(completed, &outcomes, started.elapsed().as_secs_f64());
                tracing::info!(
                    jobs = completed,
                    runs = outcomes.len(),
                    "runs dispatched in a batch"
                );
                Ok(Vec::new())
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    jobs = jobs.len(),
                    "batch dispatch failed; dispatching its jobs one by one"
                );
                Ok(jobs)
            }
        }
    }

    async fn process(&self, job: Job) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let result = match &job.task {
            Task::DispatchRun { run_id } => self.dispatch(&job, *run_id).await,
            Task::DeliverWakeup { heartbeat_run_id } => self.deliver(&job, *heartbeat_run_id).await,
            Task::DeliverNotification { notification_id } => {
                self.notify(&job, *notification_id).await
            }
            Task::FanOutNotices { .. } => self.fan_out(&job).await,
            Task::Unreadable { kind, .. } => Err(JobError::Fatal(tasks::unreadable(kind))),
        };
        let kind = job.task.kind().to_owned();
        metrics::histogram!("nexus_job_duration_seconds", "kind" => kind.clone())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                metrics::counter!("nexus_jobs_total", "kind" => kind, "outcome" => "succeeded")
                    .increment(1);
                tracing::debug!("job done");
            }
            Err(error) => {
                let outcome = self.queue.retry(&job, &error).await?;
                let label = match outcome {
                    RetryOutcome::Requeued(at) if matches!(error, JobError::Snooze(_)) => {
                        tracing::info!(retry_at = %at, "the receiver asked for time; snoozed");
                        "snoozed"
                    }
                    RetryOutcome::Requeued(at) => {
                        tracing::warn!(%error, retry_at = %at, "job failed; will retry");
                        "retried"
                    }
                    RetryOutcome::Dead => {
                        tracing::error!(%error, "job failed for the last time");
                        self.bury(&job.task, &error.to_string()).await?;
                        "dead"
                    }
                    RetryOutcome::LeaseLost => "lease_lost",
                };
                metrics::counter!("nexus_jobs_total", "kind" => kind, "outcome" => label)
                    .increment(1);
            }
        }
        Ok(())
    }

    /// Dispatches a run: its effects and the job's completion commit in one fenced transaction.
    async fn dispatch(&self, job: &Job, run_id: Uuid) -> Result<(), JobError> {
        let dispatched = self.queue.dispatch(std::slice::from_ref(job)).await?;
        if dispatched.held.is_empty() {
            tracing::warn!("lease lost before dispatch; another worker has the job");
            return Ok(());
        }
        if let Some((_, status)) = dispatched.outcomes.first().copied() {
            record_dispatched(status);
            tracing::info!(run_id = %run_id, status = %status, "run dispatched");
        }
        Ok(())
    }

    /// Delivers a wake-up: the POST first, then the job's completion. A crash in between
    /// delivers again; receivers deduplicate by `webhook-id`.
    async fn deliver(&self, job: &Job, heartbeat_run_id: Uuid) -> Result<(), JobError> {
        let delivery = self
            .store
            .wakeup_delivery(heartbeat_run_id)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        if let Some(delivery) = delivery {
            let timestamp = self.store.clock().now().timestamp();
            let allow_private = self.settings.allow_private_urls;
            wakeup::deliver(&self.http, &delivery, timestamp, allow_private)
                .await
                .map_err(|e| match e {
                    DeliveryError::BadSecret | DeliveryError::Forbidden => {
                        JobError::Fatal(e.to_string())
                    }
                    DeliveryError::NotAcknowledged(_) => JobError::Retry(e.to_string()),
                    DeliveryError::Busy(delay) => JobError::Snooze(delay),
                })?;
            tracing::info!(heartbeat_run_id = %heartbeat_run_id, "wake-up delivered");
        }
        self.queue.complete(job).await?;
        Ok(())
    }

    /// Turns a change's notices into one notification per receiving channel; the job's
    /// completion commits with them.
    async fn fan_out(&self, job: &Job) -> Result<(), JobError> {
        let done = self
            .store
            .fan_out_notices(std::slice::from_ref(job))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        if done.is_empty() {
            tracing::warn!("lease lost before the fan-out; another worker has the job");
        }
        Ok(())
    }

    /// Delivers a notification: the POST, its attempt recorded, then the job's completion. A
    /// crash in between sends it again with the same `webhook-id`. The last failed attempt
    /// (or a destination that can never work) leaves the notification `failed`.
    async fn notify(&self, job: &Job, notification_id: Uuid) -> Result<(), JobError> {
        let outgoing = self
            .store
            .notification_to_send(notification_id)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let Some(outgoing) = outgoing else {
            // Delivered, failed, or its channel deleted: nothing to send.
            self.queue.complete(job).await?;
            return Ok(());
        };
        let event = outgoing.body["type"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let timestamp = self.store.clock().now().timestamp();
        let allow_private = self.settings.allow_private_urls;
        match notify::deliver(&self.http, &outgoing, timestamp, allow_private).await {
            Ok(status_code) => {
                let attempt = Attempt::Delivered { status_code };
                self.store
                    .record_notification_attempt(notification_id, attempt)
                    .await?;
                metrics::counter!("nexus_notifications_total", "event" => event, "outcome" => "delivered")
                    .increment(1);
                tracing::info!(notification_id = %notification_id, "notification delivered");
                self.queue.complete(job).await?;
                Ok(())
            }
            Err(refused) => {
                let last = refused.hopeless || job.attempts >= job.max_attempts;
                let attempt = Attempt::Failed {
                    status_code: refused.status_code,
                    error: refused.error.clone(),
                    last,
                };
                self.store
                    .record_notification_attempt(notification_id, attempt)
                    .await?;
                let outcome = if last { "failed" } else { "retried" };
                metrics::counter!("nexus_notifications_total", "event" => event, "outcome" => outcome)
                    .increment(1);
                Err(if last {
                    JobError::Fatal(refused.error)
                } else {
                    JobError::Retry(refused.error)
                })
            }
        }
    }

    /// Leaves the record straight after a job's last failure: the run or heartbeat run it was
    /// for becomes `failed` with the reason.
    async fn bury(&self, task: &Task, error: &str) -> anyhow::Result<()> {
        match task {
            Task::DispatchRun { run_id } => {
                let reason = format!("dispatch failed after repeated attempts: {error}");
                self.store.fail_undispatched_run(*run_id, &reason).await?;
            }
            Task::DeliverWakeup { heartbeat_run_id } => {
                let reason = format!("the wake-up could not be delivered: {error}");
                if self
                    .store
                    .fail_undelivered_heartbeat(*heartbeat_run_id, &reason)
                    .await?
                {
                    metrics::counter!("nexus_heartbeat_runs_total", "status" => "failed")
                        .increment(1);
                }
            }
            // The attempt that ended a delivery recorded the notification `failed`; a fan-out
            // that kept failing leaves its notices in the dead job (its last error says why).
            Task::DeliverNotification { .. }
            | Task::FanOutNotices { .. }
            | Task::Unreadable { .. } => {}
        }
        Ok(())
    }

    /// One maintenance pass: expired leases back to the queue (their dead jobs buried) and
    /// overdue heartbeat runs timed out.
    ///
    /// # Errors
    /// The database failed.
    pub async fn maintain(&self) -> anyhow::Result<()> {
        let report = self.queue.reap().await?;
        if report.requeued > 0 {
            tracing::warn!(
                jobs = report.requeued,
                "returned jobs with expired leases to the queue"
            );
        }
        for task in &report.dead {
            self.bury(task, "lease expired on the last attempt").await?;
        }
        let timed_out = self
            .store
            .time_out_heartbeats(self.settings.heartbeat_timeout)
            .await?;
        if timed_out > 0 {
            metrics::counter!("nexus_heartbeat_runs_total", "status" => "timed_out")
                .increment(timed_out);
            tracing::info!(count = timed_out, "heartbeat runs timed out");
        }
        // Signatures remembered in the database (no Redis) whose replay window is over.
        self.store.purge_signatures().await?;
        // Secrets replaced by a rotation whose grace period is over.
        self.store.destroy_expired_secrets().await?;
        // Gauges of every kind and state, zero when absent, so drained queues read 0.
        let depth = self.queue.depth().await?;
        for kind in [
            DISPATCH_RUN,
            DELIVER_WAKEUP,
            tasks::FAN_OUT_NOTICES,
            tasks::DELIVER_NOTIFICATION,
        ] {
            for state in ["queued", "running"] {
                let row = depth.iter().find(|d| d.kind == kind && d.state == state);
                let labels = [("kind", kind.to_owned()), ("state", state.to_owned())];
                #[allow(clippy::cast_precision_loss)]
                metrics::gauge!("nexus_queue_depth", &labels)
                    .set(row.map_or(0.0, |d| d.count as f64));
                metrics::gauge!("nexus_queue_oldest_age_seconds", &labels)
                    .set(row.map_or(0.0, |d| d.oldest_age_secs));
            }
        }
        Ok(())
    }

    /// Runs the loops until `stop` turns true: `concurrency` job loops woken by `NOTIFY` (with a
    /// polling fallback) and the maintenance loop. Jobs in flight when `stop` turns true finish.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        // A generation counter, not a bare notification: a NOTIFY that arrives while a loop is
        // busy claiming is still seen when that loop next waits.
        let (wake, _) = watch::channel(0u64);
        let wake = Arc::new(wake);
        let listener = self.settings.notifications.then(|| {
            tokio::spawn(listen(
                Arc::clone(&self.store),
                Arc::clone(&wake),
                stop.clone(),
            ))
        });
        let mut tasks = Vec::new();
        for _ in 0..self.settings.concurrency.max(1) {
            let worker = self.clone();
            let wake = wake.subscribe();
            let stop = stop.clone();
            tasks.push(tokio::spawn(
                async move { worker.job_loop(wake, stop).await },
            ));
        }
        let maintenance = {
            let worker = self.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = worker.maintain().await {
                        tracing::warn!(error = format!("{e:#}"), "maintenance pass failed");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(worker.settings.maintenance_interval) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            })
        };
        for task in tasks {
            drop(task.await);
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        drop(maintenance.await);
    }

    /// When the earliest queued job that is not due yet becomes due (`None` when there is no
    /// such job, or the read failed: the poll interval covers it).
    async fn next_due(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.store.next_job_at().await {
            Ok(next) => next,
            Err(e) => {
                tracing::debug!(error = %e, "reading the next due job failed");
                None
            }
        }
    }

    async fn job_loop(&self, mut wake: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            wake.borrow_and_update();
            match self.run_once().await {
                Ok(Outcome::Worked(_)) => {}
                Ok(Outcome::Idle) => {
                    // A job enqueued ahead (a prepared schedule fire, a retry after its
                    // backoff) is taken when it becomes due, not at the next poll.
                    let clock = Arc::clone(self.store.clock());
                    let due = self.next_due().await;
                    tokio::select! {
                        _ = wake.changed() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        () = async {
                            match due {
                                Some(at) => clock.sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        } => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "claiming failed; retrying shortly"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }
            }
        }
    }
}

/// Wakes idle job loops on every `NOTIFY` of the jobs channel; reconnects after failures.
async fn listen(
    store: Arc<dyn WorkerStorage>,
    wake: Arc<watch::Sender<u64>>,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let listener = async {
            let mut announcements = store.subscribe(Topic::Jobs).await?;
            loop {
                announcements.recv().await?;
                wake.send_modify(|generation| *generation = generation.wrapping_add(1));
            }
            #[allow(unreachable_code)]
            Ok::<(), nexus_shared::store::StoreError>(())
        };
        if let Err(e) = listener.await {
            tracing::warn!(error = %e, "job notifications interrupted; polling until they resume");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The span of one job, continuing the trace of the request that enqueued it.
fn job_span(job: &Job) -> tracing::Span {
    let span = tracing::info_span!(
        "job",
        kind = %job.task.kind(),
        job_id = %job.id,
        attempt = job.attempts,
        traceparent = job.trace_context.as_ref().and_then(|t| t["traceparent"].as_str()).unwrap_or_default(),
    );
    nexus_shared::telemetry::continue_job_trace(&span, job.trace_context.as_ref());
    span
}

/// Metrics of `jobs` dispatch jobs completed together in `seconds`, with their runs' outcomes.
fn record_batch(jobs: usize, outcomes: &[(Uuid, RunStatus)], seconds: f64) {
    #[allow(clippy::cast_precision_loss)]
    let each = seconds / jobs.max(1) as f64;
    for _ in 0..jobs {
        metrics::histogram!("nexus_job_duration_seconds", "kind" => DISPATCH_RUN).record(each);
    }
    metrics::counter!("nexus_jobs_total", "kind" => DISPATCH_RUN, "outcome" => "succeeded")
        .increment(jobs as u64);
    for (_, status) in outcomes {
        record_dispatched(*status);
    }
}

fn record_dispatched(status: RunStatus) {
    metrics::counter!("nexus_runs_dispatched_total", "status" => status.as_str()).increment(1);
    if matches!(status, RunStatus::IssueCreated | RunStatus::Coalesced) {
        metrics::counter!("nexus_heartbeat_runs_total", "status" => "queued").increment(1);
    }
}
