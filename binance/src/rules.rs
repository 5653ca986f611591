//! Binance's limits and rules as named constants, each citing where Binance states it
//! (developers.binance.com: "WebSocket Streams" / "Websocket Market Streams", "General API
//! Information", "LIMITS", and the endpoints' "Weight" tables).

use std::time::Duration;

/// "A single connection can listen to a maximum of 1024 streams." (spot and USD-M)
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;

/// "A single connection ... is only valid for 24 hours; expect to be disconnected at the
/// 24 hour mark." (spot and USD-M)
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Spot: "The WebSocket server will send a ping frame every 20 seconds."
pub const SPOT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Spot: "If the WebSocket server does not receive a pong frame back from the connection
/// within a minute the connection will be disconnected."
pub const SPOT_PONG_TIMEOUT: Duration = Duration::from_secs(60);
/// USD-M: "The websocket server will send a ping frame every 3 minutes."
pub const USDM_PING_INTERVAL: Duration = Duration::from_secs(3 * 60);
/// USD-M: "If the websocket server does not receive a pong frame back from the connection
/// within a 10 minute period, the connection will be disconnected."
pub const USDM_PONG_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Spot: "WebSocket connections have a limit of 5 incoming messages per second. A message is
/// considered: a PING frame, a PONG frame, a JSON controlled message (e.g. subscribe,
/// unsubscribe)." Beyond it the connection is disconnected.
pub const SPOT_MAX_INCOMING_PER_SECOND: u32 = 5;
/// USD-M: "WebSocket connections have a limit of 10 incoming messages per second."
pub const USDM_MAX_INCOMING_PER_SECOND: u32 = 10;

/// Spot: "There is a limit of 300 connections per attempt every 5 minutes per IP."
pub const MAX_CONNECTION_ATTEMPTS_PER_5_MIN: u32 = 300;

/// Spot REST: REQUEST_WEIGHT limit per minute (exchangeInfo `rateLimits`).
pub const SPOT_REQUEST_WEIGHT_PER_MINUTE: u32 = 6000;
/// USD-M REST: REQUEST_WEIGHT limit per minute (exchangeInfo `rateLimits`).
pub const USDM_REQUEST_WEIGHT_PER_MINUTE: u32 = 2400;

/// Response header carrying the weight used by this IP in the current minute.
pub const USED_WEIGHT_HEADER: &str = "X-MBX-USED-WEIGHT-1M";

/// Spot `GET /api/v3/depth` weight by `limit`: 1–100 → 5, 101–500 → 25, 501–1000 → 50,
/// 1001–5000 → 250.
pub fn spot_depth_weight(limit: u32) -> u32 {
    match limit {
        0..=100 => 5,
        101..=500 => 25,
        501..=1000 => 50,
        _ => 250,
    }
}

/// USD-M `GET /fapi/v1/depth` weight by `limit`: 5, 10, 20, 50 → 2; 100 → 5; 500 → 10;
/// 1000 → 20.
pub fn usdm_depth_weight(limit: u32) -> u32 {
    match limit {
        0..=50 => 2,
        51..=100 => 5,
        101..=500 => 10,
        _ => 20,
    }
}

/// Spot snapshot depth used for syncing: the deepest book Binance serves.
pub const SPOT_SNAPSHOT_LIMIT: u32 = 5000;
/// USD-M snapshot depth used for syncing: the deepest book Binance serves.
pub const USDM_SNAPSHOT_LIMIT: u32 = 1000;
/// Spot snapshot depth for the less busy tiers: 1000 levels cost weight 50 instead of 5000's
/// 250 ([`spot_depth_weight`]), and cover their books.
pub const SPOT_SNAPSHOT_LIMIT_LIGHT: u32 = 1000;

/// The gap between two control messages (SUBSCRIBE, UNSUBSCRIBE) on one connection: a third
/// more than the incoming-message limit allows ([`SPOT_MAX_INCOMING_PER_SECOND`],
/// [`USDM_MAX_INCOMING_PER_SECOND`]), leaving room for pongs, which count too.
pub fn subscribe_interval(venue: crate::Venue) -> Duration {
    let per_second = match venue {
        crate::Venue::Spot => SPOT_MAX_INCOMING_PER_SECOND,
        crate::Venue::Usdm => USDM_MAX_INCOMING_PER_SECOND,
    };
    Duration::from_millis(1_500 / u64::from(per_second))
}

/// The longest symbol accepted, in characters. Binance's error -1100 states the legal range of a
/// `symbol` parameter as `^[A-Z0-9-_.]{1,20}$`; since then it has listed symbols with
/// non-Latin letters (USD-M `币安人生USDT`) and dated futures (`BTCUSDT_261225`), so a reader of
/// stored data accepts any letter, and more room than 20.
pub const MAX_SYMBOL_CHARS: usize = 32;

/// Whether `s` can be a Binance symbol: 1 to [`MAX_SYMBOL_CHARS`] characters, each a letter, a
/// digit, `-`, `_` or `.` (error -1100's set, with letters beyond ASCII; see above). No control
/// character, space or NUL can reach a query through it.
pub fn is_symbol(s: &str) -> bool {
    let n = s.chars().count();
    (1..=MAX_SYMBOL_CHARS).contains(&n)
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_weights_follow_binance_tables() {
        assert_eq!(spot_depth_weight(100), 5);
        assert_eq!(spot_depth_weight(1000), 50);
        assert_eq!(spot_depth_weight(SPOT_SNAPSHOT_LIMIT), 250);
        assert_eq!(usdm_depth_weight(50), 2);
        assert_eq!(usdm_depth_weight(500), 10);
        assert_eq!(usdm_depth_weight(USDM_SNAPSHOT_LIMIT), 20);
        assert_eq!(spot_depth_weight(SPOT_SNAPSHOT_LIMIT_LIGHT), 50);
    }

    #[test]
    fn control_messages_stay_under_the_incoming_limits() {
        assert_eq!(
            subscribe_interval(crate::Venue::Spot),
            Duration::from_millis(300)
        );
        assert_eq!(
            subscribe_interval(crate::Venue::Usdm),
            Duration::from_millis(150)
        );
    }

    #[test]
    fn symbols_are_letters_digits_and_three_marks() {
        for ok in [
            "BTCUSDT",
            "BTCUSDT_261225",
            "币安人生USDT",
            "1000PEPEUSDT",
            "A",
        ] {
            assert!(is_symbol(ok), "{ok}");
        }
        let long = "A".repeat(MAX_SYMBOL_CHARS + 1);
        for bad in [
            "",
            "BTC\u{0}USDT",
            "BTC USDT",
            "BTC/USDT",
            "a'b",
            long.as_str(),
        ] {
            assert!(!is_symbol(bad), "{bad:?}");
        }
    }
}
