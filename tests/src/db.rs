//! One freshly migrated database per test, dropped when the test ends.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection as _, PgConnection, PgPool};

/// The Postgres server URL of the tests (any database on it).
pub(crate) fn admin_url() -> String {
    std::env::var("NEXUS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `admin_url` with its database replaced by `name`.
fn url_for(name: &str) -> String {
    let admin = admin_url();
    let (server, _) = admin.rsplit_once('/').expect("a database URL has a path");
    format!("{server}/{name}")
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// A pool on it, for assertions.
    pub pool: PgPool,
}

impl TestDb {
    /// Creates and migrates a new database. Databases left behind by killed test runs more than
    /// an hour ago are dropped on the way.
    ///
    /// # Panics
    /// When the server is unreachable.
    pub async fn create() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!(
            "nexus_test_{now}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = PgConnection::connect(&admin_url()).await.expect(
            "Postgres is reachable at NEXUS_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres)",
        );
        drop_stale(&mut admin, now).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let url = url_for(&name);
        // Checked on every use: a test that ends the database's sessions (as a restart would)
        // goes on with its own queries unharmed.
        let pool = nexus_shared::db::pool_checking_after(&url, 5, std::time::Duration::ZERO)
            .expect("valid URL");
        nexus_shared::db::migrate(&pool)
            .await
            .expect("migrations apply");
        Self { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside or outside a runtime: use a thread with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url()).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        });
        drop(dropped.join());
    }
}

async fn drop_stale(admin: &mut PgConnection, now: u64) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'nexus\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name.split('_').nth(2).and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| t + 3600 < now) {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            drop(
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *admin)
                    .await,
            );
        }
    }
}
