//! A TCP proxy to the real Redis that a test can cut and restore, to simulate a Redis outage
//! for the processes pointed at it without touching the shared server.

use std::net::SocketAddr;

use tokio::sync::watch;

/// A controllable proxy; its URL is what the processes under test use as `NEXUS_REDIS_URL`.
#[derive(Debug)]
pub struct RedisProxy {
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    open: watch::Sender<bool>,
}

impl RedisProxy {
    /// Starts a proxy, open when `open` is true.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(open: bool) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let url = format!("redis://{}", listener.local_addr().expect("addr"));
        let target = crate::redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
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
