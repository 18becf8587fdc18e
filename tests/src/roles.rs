//! Seeding a team and its routines through the API, and the roles (a worker, a scheduler)
//! on a test app's store and coordination.

use super::*;

/// A company with a project and an agent, ready for routines.
#[derive(Debug, Clone)]
pub struct Team {
    /// The company.
    pub company: String,
    /// A project of it.
    pub project: String,
    /// An agent of it.
    pub agent: String,
    /// The agent's key.
    pub key: String,
}

impl TestApp {
    /// A company, a project and an agent.
    ///
    /// # Panics
    /// When the API refuses.
    pub async fn seed_team(&self) -> Team {
        let company = self.seed_company("Acme").await;
        let project = self.seed_project(&company).await;
        let (agent, key) = self.seed_agent(&company, "Ada").await;
        Team {
            company,
            project,
            agent,
            key,
        }
    }

    /// A routine of `team` assigned to its agent, with `extra` fields merged into the body;
    /// returns its id.
    ///
    /// # Panics
    /// When the API refuses.
    pub async fn seed_routine(&self, team: &Team, extra: &Value) -> String {
        let mut body = serde_json::json!({
            "title": "Daily report {{date}}",
            "assigneeAgentId": team.agent,
            "projectId": team.project,
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.board()
            .create_routine(&team.company, &body)
            .await
            .expect(201)
            .id()
    }

    /// A trigger of `routine`; returns the whole response body `{trigger, secretMaterial}`.
    ///
    /// # Panics
    /// When the API refuses.
    pub async fn seed_trigger(&self, routine: &str, body: &Value) -> Value {
        self.board()
            .create_trigger(routine, body)
            .await
            .expect(201)
            .body
    }
}

impl TestApp {
    /// A worker on this app's store, claiming as `name`.
    ///
    /// # Panics
    /// When the HTTP client cannot be built.
    #[must_use]
    pub fn worker(&self, name: &str) -> nexus_worker::Worker {
        self.worker_batching(name, nexus_worker::Settings::default().batch)
    }

    /// A worker claiming up to `batch` jobs per step.
    ///
    /// # Panics
    /// When the HTTP client cannot be built.
    #[must_use]
    pub fn worker_batching(&self, name: &str, batch: usize) -> nexus_worker::Worker {
        let settings = nexus_worker::Settings {
            poll_interval: std::time::Duration::from_millis(20),
            allow_private_urls: self.config.allow_private_urls,
            batch,
            ..nexus_worker::Settings::default()
        };
        nexus_worker::Worker::new(self.store.clone(), name.to_owned(), settings).expect("worker")
    }

    /// Handles due jobs with one worker until none is due; returns how many were handled.
    ///
    /// # Panics
    /// When the database fails.
    pub async fn drain(&self) -> usize {
        let worker = self.worker("drain");
        let mut handled = 0;
        while let nexus_worker::Outcome::Worked(jobs) =
            worker.run_once().await.expect("worker step")
        {
            handled += jobs;
        }
        handled
    }

    /// Counts rows matching a query that returns one `bigint`.
    ///
    /// # Panics
    /// When the query fails.
    pub async fn count(&self, sql: &'static str, bind: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(bind)
            .fetch_one(&self.db.pool)
            .await
            .expect("count query")
    }

    /// Waits (up to 10 s) until a session of this app's database waits for a lock — a request
    /// that has reached a row the test holds.
    ///
    /// # Panics
    /// When the query fails or no session waits in time.
    pub async fn until_a_session_waits_for_a_lock(&self, what: &str) {
        self.until_sessions_wait_for_a_lock(1, what).await;
    }

    /// Waits (up to 10 s) until at least `sessions` sessions of this app's database wait for a
    /// lock: requests sent one after another, each once the one before waits, queue for a held
    /// row in the order they were sent.
    ///
    /// # Panics
    /// When the query fails or fewer sessions wait in time.
    pub async fn until_sessions_wait_for_a_lock(&self, sessions: i64, what: &str) {
        eventually(10, what, || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&self.db.pool)
            .await
            .expect("activity");
            (waiting >= sessions).then_some(())
        })
        .await;
    }
}

impl TestApp {
    /// A scheduler instance on this app's store and Redis prefix.
    ///
    /// # Panics
    /// When the Redis URL is invalid.
    #[must_use]
    pub fn scheduler(&self, id: &str, ttl: std::time::Duration) -> nexus_scheduler::Scheduler {
        self.scheduler_with(id, ttl, nexus_scheduler::Settings::default())
    }

    /// A scheduler instance with `settings`.
    ///
    /// # Panics
    /// When the Redis URL is invalid.
    #[must_use]
    pub fn scheduler_with(
        &self,
        id: &str,
        ttl: std::time::Duration,
        settings: nexus_scheduler::Settings,
    ) -> nexus_scheduler::Scheduler {
        let lock = nexus_scheduler::LeaderLock::new(self.coordination.clone(), id.to_owned(), ttl);
        nexus_scheduler::Scheduler::new(self.store.clone(), lock, settings)
    }
}
