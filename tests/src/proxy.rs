//! A TCP proxy to the real Redis or Postgres (or to an API) that a test can cut and restore, to
//! simulate an outage for the processes pointed at it without touching the shared server.

use std::net::SocketAddr;

use tokio::sync::watch;

/// A controllable proxy; its URL is what the processes under test use as `NEXUS_REDIS_URL`
/// or `NEXUS_DATABASE_URL`.
#[derive(Debug)]
pub struct Proxy {
    /// The server's URL with its host and port replaced by the proxy's.
    pub url: String,
    open: watch::Sender<bool>,
}

impl Proxy {
    /// A proxy to the tests' Redis, open when `open` is true.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn redis(open: bool) -> Self {
        Self::to(&crate::redis_url(), open).await
    }

    /// A proxy to the Postgres server of `database_url`; its URL names the same database.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn postgres(database_url: &str, open: bool) -> Self {
        Self::to(database_url, open).await
    }

    /// A proxy to an HTTP server at `base` (`http://host:port`); its URL ends in `/`.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn http(base: &str) -> Self {
        Self::to(base, true).await
    }

    /// A proxy to the host and port of `url` (`scheme://[user@]host:port[/path]`).
    async fn to(url: &str, open: bool) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
        let (target, path) = rest.split_once('/').map_or((rest, ""), |(t, p)| (t, p));
        let target = target.to_owned();
        let at = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let url = format!(
            "{scheme}://{at}{}/{path}",
            listener.local_addr().expect("addr")
        );
        let (state, opened) = watch::channel(open);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut opened = opened.clone();
                if !*opened.borrow() {
                    continue; // dropped at once: the client sees its connection closed
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = opened.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Self { url, open: state }
    }

    /// Cuts every connection and refuses new ones (`false`), or lets them through (`true`).
    pub fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}
