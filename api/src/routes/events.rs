//! `GET /api/companies/{companyId}/events`: the company's changes as a server-sent event
//! stream (API.md "Live updates"; how events are made: [`crate::live`]).

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream::{self, Stream, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, broadcast::error::RecvError};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Auth,
    error::{ApiError, ApiPath, ErrorBody},
    live::{MAX_REPLAY, Rendered, Watch, render_all},
    state::AppState,
};

/// A comment line this often keeps proxies from closing an idle stream.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A stream ends after this long; the client reconnects with `Last-Event-ID` and loses
/// nothing, and no connection is held for ever.
pub(crate) const STREAM_LIFETIME: Duration = Duration::from_secs(30 * 60);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(company_events))
}

/// The company's changes as they are committed: `run.created`, `run.updated`,
/// `routine.updated`, `trigger.updated` (a deleted trigger's data is `{id, routineId,
/// deleted: true}`), each with the resource's JSON as data and an increasing id. With
/// `Last-Event-ID` the stream starts with the events missed in the last five minutes (at most
/// 1,000), or with a `reset` event telling the client to reload. Board, or an agent of the
/// company.
#[utoipa::path(get, path = "/api/companies/{companyId}/events", tag = "events",
    params(("companyId" = Uuid, Path),
           ("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received")),
    responses((status = 200, content_type = "text/event-stream", body = String),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
async fn company_events(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.see_company(&state, company_id).await?;
    let Ok(permit) = Arc::clone(&state.hub.streams).try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            "this server has as many event streams open as it allows; retry shortly",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5")));
    };
    let watch = state.hub.watch(company_id);
    let seen = headers.get("last-event-id").map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
    });
    let (first, sent_through) = match seen {
        None => (Vec::new(), watch.position),
        Some(seen) => catch_up(&state, company_id, seen).await?,
    };
    let live = live(watch, sent_through, permit);
    let events = stream::iter(first.into_iter().map(Ok)).chain(live);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer responses (nginx) pass this one through as it is written.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// What a reconnecting client missed after `seen` (unreadable: `None`): the events from the
/// log, or a `reset`; and the number the live part continues after.
async fn catch_up(
    state: &AppState,
    company_id: Uuid,
    seen: Option<i64>,
) -> Result<(Vec<Event>, i64), ApiError> {
    let log = state.store.event_log().await?;
    if let Some(seen) = seen.filter(|&seen| log.can_resume(seen)) {
        let missed = state
            .store
            .events_after(Some(company_id), seen, MAX_REPLAY + 1)
            .await?;
        if i64::try_from(missed.len()).is_ok_and(|n| n <= MAX_REPLAY) {
            let through = missed.last().map_or(seen, |e| e.id);
            let events = render_all(&state.store, &missed).await?;
            return Ok((events.iter().map(event).collect(), through));
        }
    }
    Ok((vec![reset(log.last_id)], log.last_id))
}

/// The `reset` event: reload, then continue after `id`.
fn reset(id: i64) -> Event {
    Event::default()
        .event("reset")
        .id(id.to_string())
        .data("{}")
}

fn event(rendered: &Rendered) -> Event {
    Event::default()
        .event(rendered.name)
        .id(rendered.id.to_string())
        .data(&rendered.data)
}

/// The broadcast events of the watched company numbered after `after`, until the stream's
/// lifetime ends; a client too slow to keep up is sent `reset`.
fn live(
    watch: Watch,
    after: i64,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let company_id = watch.company_id();
    let deadline = tokio::time::Instant::now() + STREAM_LIFETIME;
    stream::unfold(
        (watch, after, permit),
        move |(mut watch, mut after, permit)| async move {
            loop {
                if *watch.closing.borrow() {
                    return None;
                }
                let received = tokio::select! {
                    received = watch.receiver.recv() => received,
                    () = tokio::time::sleep_until(deadline) => return None,
                    _ = watch.closing.changed() => return None,
                };
                match received {
                    Ok(rendered) if rendered.company_id == company_id && rendered.id > after => {
                        after = rendered.id;
                        return Some((Ok(event(&rendered)), (watch, after, permit)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        let position = watch.hub_position();
                        after = after.max(position);
                        return Some((Ok(reset(after)), (watch, after, permit)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}
