//! Binance's WebSocket market-stream protocol: raw `/ws/<stream>` and combined
//! `/stream?streams=a/b` connections (USD-M also under `/public` and `/market`), live
//! SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY, server pings with
//! pong tracking, and Binance's limits enforced by closing the connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use binance::streams::{StreamKind, UsdmPath};
use futures_util::SinkExt;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::venue::VenueState;

/// Close code Binance uses for policy violations (too many messages or streams).
const CLOSE_POLICY: u16 = 1008;

/// Which streams a path serves: everything, or one USD-M half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathFilter {
    Any,
    Usdm(UsdmPath),
}

impl PathFilter {
    fn allows(self, kind: StreamKind) -> bool {
        match self {
            PathFilter::Any => true,
            PathFilter::Usdm(p) => kind.usdm_path() == p,
        }
    }
}

fn streams_from_path(rest: &str) -> Vec<String> {
    rest.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `GET /ws`, `/ws/<streams>`, `/stream?streams=` with a path filter given by the router.
pub async fn upgrade(
    state: Arc<VenueState>,
    filter: PathFilter,
    combined: bool,
    streams: Vec<String>,
    ws: WebSocketUpgrade,
) -> Response {
    if state.faults.refusing_connections() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "connections refused (fault injection)",
        )
            .into_response();
    }
    state
        .stats
        .connections_opened
        .fetch_add(1, Ordering::Relaxed);
    ws.on_upgrade(move |socket| connection(socket, state, filter, combined, streams))
}

pub async fn raw_root(State(s): State<Arc<VenueState>>, ws: WebSocketUpgrade) -> Response {
    upgrade(s, PathFilter::Any, false, Vec::new(), ws).await
}
pub async fn raw_streams(
    State(s): State<Arc<VenueState>>,
    Path(rest): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(s, PathFilter::Any, false, streams_from_path(&rest), ws).await
}
pub async fn combined(
    State(s): State<Arc<VenueState>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let streams = q
        .get("streams")
        .map(|s| streams_from_path(s))
        .unwrap_or_default();
    upgrade(s, PathFilter::Any, true, streams, ws).await
}
macro_rules! usdm_routes {
    ($raw_root:ident, $raw:ident, $comb:ident, $path:expr) => {
        pub async fn $raw_root(State(s): State<Arc<VenueState>>, ws: WebSocketUpgrade) -> Response {
            upgrade(s, PathFilter::Usdm($path), false, Vec::new(), ws).await
        }
        pub async fn $raw(
            State(s): State<Arc<VenueState>>,
            Path(rest): Path<String>,
            ws: WebSocketUpgrade,
        ) -> Response {
            upgrade(
                s,
                PathFilter::Usdm($path),
                false,
                streams_from_path(&rest),
                ws,
            )
            .await
        }
        pub async fn $comb(
            State(s): State<Arc<VenueState>>,
            Query(q): Query<HashMap<String, String>>,
            ws: WebSocketUpgrade,
        ) -> Response {
            let streams = q
                .get("streams")
                .map(|s| streams_from_path(s))
                .unwrap_or_default();
            upgrade(s, PathFilter::Usdm($path), true, streams, ws).await
        }
    };
}
usdm_routes!(
    public_raw_root,
    public_raw,
    public_combined,
    UsdmPath::Public
);
usdm_routes!(
    market_raw_root,
    market_raw,
    market_combined,
    UsdmPath::Market
);

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })))
        .await;
}

/// The reply to one control message, or a reason to close the connection.
enum Reply {
    Send(String),
    Close(&'static str),
}

fn error(code: i64, msg: &str, id: Option<&sonic_rs::Value>) -> String {
    let msg = sonic_rs::to_string(msg).unwrap_or_else(|_| "\"error\"".to_owned());
    match id {
        Some(id) => format!(
            "{{\"code\":{code},\"msg\":{msg},\"id\":{}}}",
            id.as_u64()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "null".into())
        ),
        None => format!("{{\"code\":{code},\"msg\":{msg}}}"),
    }
}

fn handle_request(
    text: &str,
    subs: &mut HashSet<String>,
    combined: &mut bool,
    max_streams: usize,
) -> Reply {
    let v: sonic_rs::Value = match sonic_rs::from_str(text) {
        Ok(v) => v,
        Err(e) => return Reply::Send(error(3, &format!("Invalid JSON: {e}"), None)),
    };
    let id_val = v.get("id");
    let Some(id) = id_val.and_then(|i| i.as_u64()) else {
        return Reply::Send(error(
            2,
            "Invalid request: request ID must be an unsigned integer",
            None,
        ));
    };
    let method = v.get("method").and_then(|m| m.as_str()).unwrap_or("");
    let params: Vec<&sonic_rs::Value> = v
        .get("params")
        .and_then(|p| p.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let strings = || -> Option<Vec<String>> {
        params
            .iter()
            .map(|p| p.as_str().map(str::to_owned))
            .collect()
    };
    match method {
        "SUBSCRIBE" | "UNSUBSCRIBE" => {
            let Some(names) = strings() else {
                return Reply::Send(error(2, "Invalid request: stream names must be strings", id_val));
            };
            if method == "SUBSCRIBE" {
                let new: HashSet<String> = names.into_iter().filter(|n| !subs.contains(n)).collect();
                if subs.len() + new.len() > max_streams {
                    return Reply::Close("Too many streams");
                }
                subs.extend(new);
            } else {
                for n in names {
                    subs.remove(&n);
                }
            }
            Reply::Send(format!("{{\"result\":null,\"id\":{id}}}"))
        }
        "LIST_SUBSCRIPTIONS" => {
            let mut list: Vec<&String> = subs.iter().collect();
            list.sort();
            Reply::Send(format!("{{\"result\":{},\"id\":{id}}}", sonic_rs::to_string(&list).unwrap_or_else(|_| "[]".into())))
        }
        "SET_PROPERTY" => match (params.first().and_then(|p| p.as_str()), params.get(1)) {
            (Some("combined"), Some(b)) => match b.as_bool() {
                Some(b) => {
                    *combined = b;
                    Reply::Send(format!("{{\"result\":null,\"id\":{id}}}"))
                }
                None => Reply::Send(error(1, "Invalid value type: expected Boolean", id_val)),
            },
            (Some(_), _) => Reply::Send(error(0, "Unknown property", id_val)),
            (None, _) => Reply::Send(error(2, "Invalid request: property name must be a string", id_val)),
        },
        "GET_PROPERTY" => match params.first().and_then(|p| p.as_str()) {
            Some("combined") => Reply::Send(format!("{{\"result\":{combined},\"id\":{id}}}")),
            Some(_) => Reply::Send(error(0, "Unknown property", id_val)),
            None => Reply::Send(error(2, "Invalid request: property name must be a string", id_val)),
        },
        other => Reply::Send(error(
            2,
            &format!("Invalid request: unknown variant `{other}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"),
            id_val,
        )),
    }
}

/// Frames written before a flush, at most (bounds how long other events wait).
const MAX_FRAMES_PER_FLUSH: usize = 256;

/// Frames to write before one flush: `first`, then whatever is already queued, at most `max`
/// in all. A frame is taken off the queue only when it will be written, so nothing is lost
/// at the limit (the next burst starts with the next frame).
struct Burst<T> {
    frames: Vec<T>,
    /// The sender is gone: write these, then end the connection.
    closed: bool,
}

/// `Err(())`: this receiver lagged and frames were lost to it.
fn burst<T: Clone>(
    first: Result<T, RecvError>,
    rx: &mut tokio::sync::broadcast::Receiver<T>,
    max: usize,
) -> Result<Burst<T>, ()> {
    let mut frames = Vec::new();
    let mut next = first;
    loop {
        match next {
            Ok(f) => frames.push(f),
            Err(RecvError::Lagged(_)) => return Err(()),
            Err(RecvError::Closed) => {
                return Ok(Burst {
                    frames,
                    closed: true,
                })
            }
        }
        if frames.len() >= max {
            return Ok(Burst {
                frames,
                closed: false,
            });
        }
        next = match rx.try_recv() {
            Ok(f) => Ok(f),
            Err(TryRecvError::Empty) => {
                return Ok(Burst {
                    frames,
                    closed: false,
                })
            }
            Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(TryRecvError::Closed) => Err(RecvError::Closed),
        };
    }
}

async fn connection(
    mut socket: WebSocket,
    state: Arc<VenueState>,
    filter: PathFilter,
    mut combined: bool,
    initial: Vec<String>,
) {
    let cfg = &state.cfg;
    if initial.len() > cfg.max_streams {
        close(&mut socket, CLOSE_POLICY, "Too many streams").await;
        return;
    }
    let (id, token) = state.conns.add();
    let mut rx = state.tx.subscribe();
    let mut subs: HashSet<String> = initial.into_iter().collect();
    state.conns.set_streams(id, &subs);
    let lifetime = tokio::time::sleep(cfg.max_connection_lifetime);
    tokio::pin!(lifetime);
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.ping_interval,
        cfg.ping_interval,
    );
    let mut unanswered_since: Option<Instant> = None;
    let mut incoming: VecDeque<Instant> = VecDeque::new();
    'conn: loop {
        tokio::select! {
            _ = token.cancelled() => { close(&mut socket, 1001, "disconnected by fault injection").await; break; }
            _ = state.shutdown.cancelled() => { close(&mut socket, 1001, "server shutting down").await; break; }
            _ = &mut lifetime => { close(&mut socket, 1000, "connection lifetime reached").await; break; }
            _ = ping.tick() => {
                if unanswered_since.is_some_and(|t| t.elapsed() > cfg.pong_timeout) {
                    close(&mut socket, CLOSE_POLICY, "Pong timeout").await;
                    break;
                }
                let payload = crate::venue::now_ms().to_string();
                if socket.send(Message::Ping(payload.into_bytes().into())).await.is_err() { break; }
                unanswered_since.get_or_insert_with(Instant::now);
            }
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { break };
                if matches!(msg, Message::Text(_) | Message::Ping(_) | Message::Pong(_)) {
                    let now = Instant::now();
                    incoming.push_back(now);
                    while incoming.front().is_some_and(|t| now.duration_since(*t).as_secs_f64() >= 1.0) {
                        incoming.pop_front();
                    }
                    if incoming.len() > cfg.max_incoming_per_sec as usize {
                        close(&mut socket, CLOSE_POLICY, "Too many requests").await;
                        break;
                    }
                }
                match msg {
                    Message::Text(t) => match handle_request(t.as_str(), &mut subs, &mut combined, cfg.max_streams) {
                        Reply::Send(r) => {
                            state.conns.set_streams(id, &subs);
                            if socket.send(Message::Text(r.into())).await.is_err() { break }
                        }
                        Reply::Close(why) => { close(&mut socket, CLOSE_POLICY, why).await; break; }
                    },
                    Message::Pong(_) => unanswered_since = None,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            frame = rx.recv() => {
                // Everything already queued goes out with one flush (one write for a burst,
                // not one per frame): at benchmark rates the per-frame flush, not the
                // consumer, was what fell behind.
                let Ok(burst) = burst(frame, &mut rx, MAX_FRAMES_PER_FLUSH) else {
                    // Lagged: a consumer this slow would be cut off by Binance too.
                    state.stats.slow_consumers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    close(&mut socket, CLOSE_POLICY, "slow consumer").await;
                    break 'conn;
                };
                let mut pending = false;
                for f in &burst.frames {
                    if subs.contains(&f.stream) && filter.allows(f.kind) {
                        let text = if combined { &f.combined } else { &f.raw };
                        if socket.feed(Message::Text(text.as_str().into())).await.is_err() { break 'conn; }
                        pending = true;
                    }
                }
                if burst.closed { break 'conn; }
                if pending && socket.flush().await.is_err() { break; }
            }
        }
    }
    state.conns.remove(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str, subs: &mut HashSet<String>, combined: &mut bool) -> String {
        match handle_request(text, subs, combined, 3) {
            Reply::Send(s) => s,
            Reply::Close(why) => format!("CLOSE {why}"),
        }
    }

    #[test]
    fn control_messages_follow_binance() {
        let (mut subs, mut comb) = (HashSet::new(), false);
        assert_eq!(
            reply(
                r#"{"method":"SUBSCRIBE","params":["btcusdt@aggTrade","btcusdt@depth@100ms"],"id":1}"#,
                &mut subs,
                &mut comb
            ),
            r#"{"result":null,"id":1}"#
        );
        assert_eq!(
            reply(
                r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#,
                &mut subs,
                &mut comb
            ),
            r#"{"result":["btcusdt@aggTrade","btcusdt@depth@100ms"],"id":3}"#
        );
        assert_eq!(
            reply(
                r#"{"method":"UNSUBSCRIBE","params":["btcusdt@aggTrade"],"id":312}"#,
                &mut subs,
                &mut comb
            ),
            r#"{"result":null,"id":312}"#
        );
        assert_eq!(
            reply(
                r#"{"method":"SET_PROPERTY","params":["combined",true],"id":5}"#,
                &mut subs,
                &mut comb
            ),
            r#"{"result":null,"id":5}"#
        );
        assert!(comb);
        assert_eq!(
            reply(
                r#"{"method":"GET_PROPERTY","params":["combined"],"id":2}"#,
                &mut subs,
                &mut comb
            ),
            r#"{"result":true,"id":2}"#
        );
        assert!(reply(
            r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":6}"#,
            &mut subs,
            &mut comb
        )
        .starts_with(r#"{"code":1,"#));
        assert!(reply(
            r#"{"method":"GET_PROPERTY","params":["colour"],"id":7}"#,
            &mut subs,
            &mut comb
        )
        .starts_with(r#"{"code":0,"msg":"Unknown property""#));
        assert!(reply(
            r#"{"method":"SUBSCRIBE","params":["a@aggTrade"]}"#,
            &mut subs,
            &mut comb
        )
        .contains("request ID must be an unsigned integer"));
        assert!(reply(
            r#"{"method":"SUBSCRIBE","params":["a@aggTrade"],"id":-1}"#,
            &mut subs,
            &mut comb
        )
        .starts_with(r#"{"code":2,"#));
        assert!(
            reply(r#"{"method":"PING","id":8}"#, &mut subs, &mut comb).contains("unknown variant")
        );
        assert!(reply(r#"{"method":"SUBSCRIBE","#, &mut subs, &mut comb)
            .starts_with(r#"{"code":3,"msg":"Invalid JSON"#));
        assert_eq!(
            reply(
                r#"{"method":"SUBSCRIBE","params":["a@x","b@x","c@x"],"id":9}"#,
                &mut subs,
                &mut comb
            ),
            "CLOSE Too many streams"
        );
    }
}

#[cfg(test)]
mod burst_tests {
    use super::*;

    /// Every queued frame comes out once, in order, in bursts of at most the limit: the
    /// frame after a full burst starts the next one instead of being dropped.
    #[tokio::test]
    async fn bursts_lose_no_frame_at_the_limit() {
        let (tx, mut rx) = tokio::sync::broadcast::channel::<u32>(4096);
        for i in 0..1000 {
            tx.send(i).expect("a receiver exists");
        }
        let mut seen = Vec::new();
        while seen.len() < 1000 {
            let first = rx.recv().await;
            let b = burst(first, &mut rx, 256).expect("no lag");
            assert!(!b.closed && b.frames.len() <= 256);
            seen.extend(b.frames);
        }
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        drop(tx);
        let end = burst(rx.recv().await, &mut rx, 256).expect("closed, not lagged");
        assert!(end.closed && end.frames.is_empty());
    }
}
