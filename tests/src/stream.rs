//! A reader of server-sent event streams, as a browser's would read them: events separated by
//! a blank line, `event:`, `id:` and `data:` fields, comment lines (`:`) counted apart.

use std::time::Duration;

use serde_json::Value;

use super::TestApp;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Its name (`message` when none was sent).
    pub name: String,
    /// Its id, if sent.
    pub id: Option<String>,
    /// Its data, parsed as JSON.
    pub data: Value,
}

/// An open event stream.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
    /// Comment lines received so far.
    pub comments: usize,
}

impl EventStream {
    /// The next event within `wait`, or `None` when none came or the stream ended.
    ///
    /// # Panics
    /// When the stream sends something that is not UTF-8 or data that is not JSON.
    pub async fn next_within(&mut self, wait: Duration) -> Option<StreamEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream"));
        }
    }

    /// The next event, within 10 s.
    ///
    /// # Panics
    /// When none comes.
    pub async fn next(&mut self) -> StreamEvent {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("an event within 10 s")
    }

    /// Events until one matches `wanted` (within 10 s), returning it.
    ///
    /// # Panics
    /// When none does.
    pub async fn until(&mut self, wanted: impl Fn(&StreamEvent) -> bool) -> StreamEvent {
        loop {
            let event = self.next().await;
            if wanted(&event) {
                return event;
            }
        }
    }

    fn parse(&mut self, block: &str) -> Option<StreamEvent> {
        let mut name = "message".to_owned();
        let mut id = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
            } else if let Some((field, value)) = line.split_once(':') {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => value.clone_into(&mut name),
                    "id" => id = Some(value.to_owned()),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
        }
        if data.is_empty() {
            return None;
        }
        let data = serde_json::from_str(&data.join("\n")).expect("JSON data");
        Some(StreamEvent { name, id, data })
    }
}

impl TestApp {
    /// Opens the event stream of `company` on `base` (this app or a replica) with `token`,
    /// sending `last_event_id`; returns the response when it is not a stream.
    ///
    /// # Errors
    /// The status code and body when the server did not open a stream.
    ///
    /// # Panics
    /// When the request cannot be sent.
    pub async fn events(
        &self,
        base: &str,
        company: &str,
        token: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, (u16, Value)> {
        let mut request = self
            .http
            .get(format!("{base}/api/companies/{company}/events"))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("send");
        if response.status() != 200 {
            let status = response.status().as_u16();
            return Err((status, response.json().await.unwrap_or(Value::Null)));
        }
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an event stream"
        );
        Ok(EventStream {
            response,
            buffer: String::new(),
            comments: 0,
        })
    }
}
