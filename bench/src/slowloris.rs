//! API latency while 1,000 connections hold half-sent request headers (a slowloris attack):
//! `GET /api/companies` through `nexus serve`, p50/p99 over `calls` requests without and then
//! with the half-open connections in place, which the header timeout closes after 30 s.

use std::time::Instant;

use tokio::io::AsyncWriteExt as _;

use crate::{
    cluster::{BOARD, Cluster},
    machine::percentile,
};

async fn measure(http: &reqwest::Client, api: &str, calls: usize) -> anyhow::Result<(f64, f64)> {
    let mut took = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let response = http
            .get(format!("{api}/api/companies"))
            .bearer_auth(BOARD)
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.status());
        response.bytes().await?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    Ok((percentile(&took, 0.50), percentile(&took, 0.99)))
}

pub(crate) async fn run(connections: usize, calls: usize) -> anyhow::Result<()> {
    let (connections, calls) = (connections.clamp(1, 5_000), calls.clamp(10, 10_000));
    let mut cluster = Cluster::new().await;
    let api = cluster
        .start("nexus serve", "nexus", &["serve"], &[])
        .await?;
    let http = reqwest::Client::new();
    let (p50, p99) = measure(&http, &api, calls).await?;
    println!("GET /api/companies, {calls} calls, no attack: p50 {p50:.2} ms, p99 {p99:.2} ms");
    let address = api.trim_start_matches("http://").to_owned();
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        stream
            .write_all(b"GET /api/companies HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await?;
        held.push(stream);
    }
    let (a50, a99) = measure(&http, &api, calls).await?;
    println!(
        "GET /api/companies, {calls} calls, {connections} half-open connections: p50 {a50:.2} ms, p99 {a99:.2} ms"
    );
    println!(
        "ratio under attack: p50 {:.2}x, p99 {:.2}x",
        a50 / p50,
        a99 / p99
    );
    drop(held);
    Ok(())
}
