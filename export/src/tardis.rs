//! Tardis.dev's downloadable CSV formats, the ones research tools already read: data type
//! names, exchange ids, file names and column headers
//! (<https://docs.tardis.dev/downloadable-csv-files/data-types>). Timestamps are microseconds
//! since the Unix epoch, UTC; `timestamp` is the exchange's time, `local_timestamp` the
//! collector's arrival time.

use std::fmt;
use std::str::FromStr;

use binance::Venue;
use chrono::NaiveDate;

use crate::{ExportError, Format};

/// One of Tardis's CSV data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Every level change, with the full book as `is_snapshot` rows at the start and at each
    /// sync: a reader rebuilds the book from the file alone.
    IncrementalBookL2,
    /// The top 25 levels per side, sampled (from `book_top`).
    BookSnapshot25,
    /// The top 5 levels per side, sampled (from `book_top`).
    BookSnapshot5,
    /// Best bid and ask as Binance's bookTicker stream sent them.
    Quotes,
    /// Aggregate trades; `side` is the taker's.
    Trades,
    /// Mark price, index price and funding (USD-M only).
    DerivativeTicker,
}

impl DataType {
    pub const ALL: [DataType; 6] = [
        DataType::IncrementalBookL2,
        DataType::BookSnapshot25,
        DataType::BookSnapshot5,
        DataType::Quotes,
        DataType::Trades,
        DataType::DerivativeTicker,
    ];

    /// Tardis's name, as in its file names.
    pub fn name(self) -> &'static str {
        match self {
            DataType::IncrementalBookL2 => "incremental_book_L2",
            DataType::BookSnapshot25 => "book_snapshot_25",
            DataType::BookSnapshot5 => "book_snapshot_5",
            DataType::Quotes => "quotes",
            DataType::Trades => "trades",
            DataType::DerivativeTicker => "derivative_ticker",
        }
    }

    /// Levels per side of a book snapshot type.
    pub fn snapshot_levels(self) -> Option<usize> {
        match self {
            DataType::BookSnapshot25 => Some(25),
            DataType::BookSnapshot5 => Some(5),
            _ => None,
        }
    }

    /// Whether the rows come from the local book, so a gap in it is a gap in the file.
    pub fn is_book(self) -> bool {
        matches!(
            self,
            DataType::IncrementalBookL2 | DataType::BookSnapshot25 | DataType::BookSnapshot5
        )
    }

    /// The table its rows come from.
    pub fn table(self) -> &'static str {
        match self {
            DataType::IncrementalBookL2 => "depth_updates",
            DataType::BookSnapshot25 | DataType::BookSnapshot5 => "book_top",
            DataType::Quotes => "book_ticker",
            DataType::Trades => "trades",
            DataType::DerivativeTicker => "mark_prices",
        }
    }

    /// Whether `venue` has this data (spot has no mark price or funding).
    pub fn on(self, venue: Venue) -> bool {
        self != DataType::DerivativeTicker || venue == Venue::Usdm
    }

    /// The CSV header line, without its newline.
    pub fn header(self) -> String {
        let mut h = String::from("exchange,symbol,timestamp,local_timestamp");
        match self {
            DataType::IncrementalBookL2 => h.push_str(",is_snapshot,side,price,amount"),
            DataType::Quotes => h.push_str(",ask_amount,ask_price,bid_price,bid_amount"),
            DataType::Trades => h.push_str(",id,side,price,amount"),
            DataType::DerivativeTicker => h.push_str(
                ",funding_timestamp,funding_rate,predicted_funding_rate,open_interest,\
                 last_price,index_price,mark_price",
            ),
            DataType::BookSnapshot25 | DataType::BookSnapshot5 => {
                for i in 0..self.snapshot_levels().unwrap_or(0) {
                    h.push_str(&format!(
                        ",asks[{i}].price,asks[{i}].amount,bids[{i}].price,bids[{i}].amount"
                    ));
                }
            }
        }
        h
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = ExportError;

    /// Tardis's names; `book_ticker` (Tardis's name for Binance's bookTicker) reads as `quotes`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "book_ticker" {
            return Ok(DataType::Quotes);
        }
        DataType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = DataType::ALL.iter().map(|t| t.name()).collect();
                ExportError::UnknownDataType(s.to_owned(), names.join(", "))
            })
    }
}

/// Tardis's exchange id for a venue.
pub fn exchange(venue: Venue) -> &'static str {
    match venue {
        Venue::Spot => "binance",
        Venue::Usdm => "binance-futures",
    }
}

/// The file name Tardis's download client gives a day of one symbol and type, e.g.
/// `binance-futures_incremental_book_L2_2026-11-25_BTCUSDT.csv.gz` (`.parquet` for Parquet).
pub fn file_name(
    venue: Venue,
    data_type: DataType,
    day: NaiveDate,
    symbol: &str,
    format: Format,
) -> String {
    format!(
        "{}_{}_{}_{}.{}",
        exchange(venue),
        data_type.name(),
        day.format("%Y-%m-%d"),
        symbol,
        format.extension()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_tardis_columns_in_tardis_order() {
        assert_eq!(
            DataType::IncrementalBookL2.header(),
            "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
        );
        assert_eq!(
            DataType::Quotes.header(),
            "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount"
        );
        assert_eq!(
            DataType::Trades.header(),
            "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
        );
        let five = DataType::BookSnapshot5.header();
        assert!(five.starts_with(
            "exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,asks[1].price"
        ));
        assert_eq!(five.split(',').count(), 4 + 5 * 4);
        assert_eq!(
            DataType::BookSnapshot25.header().split(',').count(),
            4 + 25 * 4
        );
    }

    #[test]
    fn names_parse_back_and_unknown_names_list_the_choices() {
        for t in DataType::ALL {
            assert_eq!(t.name().parse::<DataType>().ok(), Some(t));
        }
        assert_eq!(
            "book_ticker".parse::<DataType>().ok(),
            Some(DataType::Quotes)
        );
        let err = "depth".parse::<DataType>().expect_err("not a type");
        assert!(err.to_string().contains("incremental_book_L2"), "{err}");
    }

    #[test]
    fn files_are_named_as_tardis_names_them() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).expect("date");
        assert_eq!(
            file_name(
                Venue::Usdm,
                DataType::IncrementalBookL2,
                day,
                "BTCUSDT",
                Format::Csv
            ),
            "binance-futures_incremental_book_L2_2026-11-25_BTCUSDT.csv.gz"
        );
        assert_eq!(
            file_name(Venue::Spot, DataType::Trades, day, "ETHUSDT", Format::Csv),
            "binance_trades_2026-11-25_ETHUSDT.csv.gz"
        );
        assert_eq!(
            file_name(
                Venue::Spot,
                DataType::Trades,
                day,
                "ETHUSDT",
                Format::Parquet
            ),
            "binance_trades_2026-11-25_ETHUSDT.parquet"
        );
        assert!(!DataType::DerivativeTicker.on(Venue::Spot));
    }
}
