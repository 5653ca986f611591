//! Binance REST with one request-weight budget per venue: fed by `X-MBX-USED-WEIGHT-1M`,
//! paused until `Retry-After` on 429, stopped until the ban ends on 418, and never sent over
//! budget. Requests are serialized per venue, so the budget check and the request are one step.

use std::sync::Arc;
use std::time::Duration;

use binance::rules::USED_WEIGHT_HEADER;
use binance::wire::{ApiError, DepthSnapshot, ExchangeInfo, Ticker24h};
use binance::Venue;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Share of the budget we allow ourselves: other clients on the same IP may spend some.
pub const BUDGET_SHARE: f64 = 0.9;
/// Without a Retry-After header, how long a 429 pauses us.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{status}: {msg}")]
    Api { status: u16, code: i64, msg: String },
    #[error("unparseable response from {url}: {why}")]
    Parse { url: String, why: String },
    #[error("rate limited (HTTP {status}); retry after {retry_after:?}")]
    RateLimited { status: u16, retry_after: Duration },
}

#[derive(Debug)]
struct Budget {
    limit: u32,
    used: u32,
    window_start: Instant,
    paused_until: Option<Instant>,
}

/// The REST client of one venue.
#[derive(Debug)]
pub struct Rest {
    pub venue: Venue,
    base: String,
    http: reqwest::Client,
    budget: Mutex<Budget>,
    metrics: Arc<Metrics>,
}

fn api_prefix(venue: Venue) -> &'static str {
    match venue {
        Venue::Spot => "/api/v3",
        Venue::Usdm => "/fapi/v1",
    }
}

impl Rest {
    pub fn new(venue: Venue, base: &str, weight_limit: u32, metrics: Arc<Metrics>) -> Rest {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Rest {
            venue,
            base: base.trim_end_matches('/').to_owned(),
            http,
            budget: Mutex::new(Budget {
                limit: weight_limit,
                used: 0,
                window_start: Instant::now(),
                paused_until: None,
            }),
            metrics,
        }
    }

    /// Sends a GET of `weight`, waiting for budget first.
    async fn get(&self, path_and_query: &str, weight: u32) -> Result<String, RestError> {
        let mut b = self.budget.lock().await;
        loop {
            let now = Instant::now();
            if let Some(until) = b.paused_until.filter(|u| *u > now) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            // Binance's weight window is the calendar minute; our own clock window is a close,
            // conservative stand-in, corrected by the header on every response.
            if now.duration_since(b.window_start) >= Duration::from_secs(60) {
                b.window_start = now;
                b.used = 0;
            }
            if f64::from(b.used + weight) > f64::from(b.limit) * BUDGET_SHARE {
                let until = b.window_start + Duration::from_secs(60);
                tracing::info!(
                    venue = self.venue.as_str(),
                    used = b.used,
                    weight,
                    "REST budget spent; waiting for the next window"
                );
                tokio::time::sleep_until(until).await;
                continue;
            }
            break;
        }
        let url = format!("{}{}{}", self.base, api_prefix(self.venue), path_and_query);
        let resp = self.http.get(&url).send().await?;
        let status = resp.status().as_u16();
        self.metrics
            .rest_responses
            .with_label_values(&[self.venue.as_str(), &status.to_string()])
            .inc();
        if let Some(used) = resp
            .headers()
            .get(USED_WEIGHT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
        {
            b.used = used;
            self.metrics
                .rest_weight_used
                .with_label_values(&[self.venue.as_str()])
                .set(i64::from(used));
        } else {
            b.used += weight;
        }
        if status == 429 || status == 418 {
            let retry = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_RETRY_AFTER);
            b.paused_until = Some(Instant::now() + retry);
            tracing::warn!(
                venue = self.venue.as_str(),
                status,
                ?retry,
                "REST rate limited: no requests until it lifts"
            );
            return Err(RestError::RateLimited {
                status,
                retry_after: retry,
            });
        }
        let body = resp.text().await?;
        if status != 200 {
            let e: Option<ApiError> = sonic_rs::from_str(&body).ok();
            return Err(RestError::Api {
                status,
                code: e.as_ref().map(|e| e.code).unwrap_or(0),
                msg: e.map(|e| e.msg).unwrap_or(body),
            });
        }
        Ok(body)
    }

    fn parse<T: for<'de> serde::Deserialize<'de>>(
        &self,
        what: &str,
        body: &str,
    ) -> Result<T, RestError> {
        sonic_rs::from_str(body).map_err(|e| RestError::Parse {
            url: what.to_owned(),
            why: e.to_string(),
        })
    }

    pub async fn exchange_info(&self) -> Result<ExchangeInfo, RestError> {
        let weight = match self.venue {
            Venue::Spot => 20,
            Venue::Usdm => 1,
        };
        let body = self.get("/exchangeInfo", weight).await?;
        self.parse("exchangeInfo", &body)
    }

    pub async fn tickers(&self) -> Result<Vec<Ticker24h>, RestError> {
        let weight = match self.venue {
            Venue::Spot => 80,
            Venue::Usdm => 40,
        };
        let body = self.get("/ticker/24hr", weight).await?;
        self.parse("ticker/24hr", &body)
    }

    pub async fn depth(&self, symbol: &str, limit: u32) -> Result<DepthSnapshot, RestError> {
        let weight = match self.venue {
            Venue::Spot => binance::rules::spot_depth_weight(limit),
            Venue::Usdm => binance::rules::usdm_depth_weight(limit),
        };
        let body = self
            .get(&format!("/depth?symbol={symbol}&limit={limit}"), weight)
            .await?;
        self.parse("depth", &body)
    }
}
