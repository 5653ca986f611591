//! Parquet files of the same rows as the CSV files, from the same queries: PostgreSQL's CSV is
//! transcoded as it streams (arrow-csv's push decoder into parquet's `ArrowWriter`), so both
//! formats always hold the same values and a day of a busy book never sits in memory.
//!
//! Column types, by Tardis column name:
//! - prices, quantities and funding rates: `Decimal128(20, 8)`, exact. Every stored value has
//!   at most 8 fractional digits (`binance::units::SCALE`: the collector refuses any other, and
//!   Binance's values are i64 e8 counts, 19 digits at most), so scale 8 neither rounds nor
//!   pads what the exchange sent. Decimals rather than strings because pyarrow, polars and
//!   Spark sum and compare them without parsing.
//! - `timestamp`, `local_timestamp`, `funding_timestamp`: `Timestamp(µs, UTC)` (the CSV's
//!   microsecond integers, typed).
//! - `is_snapshot`: boolean; `id`: int64; `exchange`, `symbol`, `side`: strings (dictionary
//!   encoded by the writer, so they cost almost nothing).
//!
//! The range and its gaps are also in the file's key-value metadata (`depthbook.gaps`).

use std::io::Write;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray};
use arrow_csv::reader::Decoder;
use arrow_schema::{ArrowError, DataType as Arrow, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::{DataType, ExportError, Range, Summary};

/// Decimal precision: any i64 count of 1e-8 (19 digits) with one to spare.
pub const DECIMAL_PRECISION: u8 = 20;
/// Decimal scale: Binance's fractional digits.
pub const DECIMAL_SCALE: i8 = binance::units::SCALE as i8;
/// Rows per row group: large enough for fast scans (a reader reads a column of a group at a
/// time), small enough that the writer's buffered group stays in tens of MB.
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// CSV rows decoded per batch before they go to the writer.
const BATCH_ROWS: usize = 1 << 16;
/// The metadata key of the gap list (JSON, as in the `.gaps.json` sidecar).
pub const GAPS_KEY: &str = "depthbook.gaps";
/// The metadata key of the books' depth window: levels per side, or `all`.
pub const DEPTH_LEVELS_KEY: &str = "depthbook.depth_levels";

fn depth_levels(levels: Option<i32>) -> String {
    levels.map_or_else(|| "all".to_owned(), |n| n.to_string())
}

const TIME_COLUMNS: [&str; 3] = ["timestamp", "local_timestamp", "funding_timestamp"];

fn column_type(name: &str) -> Arrow {
    match name {
        "exchange" | "symbol" | "side" => Arrow::Utf8,
        "is_snapshot" => Arrow::Boolean,
        "id" => Arrow::Int64,
        n if TIME_COLUMNS.contains(&n) => {
            Arrow::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        _ => Arrow::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
    }
}

/// The Parquet schema of `data_type`: Tardis's columns, in Tardis's order, typed.
pub fn schema(data_type: DataType) -> Schema {
    let fields: Vec<Field> = data_type
        .header()
        .split(',')
        .map(|name| {
            let nullable = !matches!(
                name,
                "exchange" | "symbol" | "timestamp" | "local_timestamp"
            );
            Field::new(name, column_type(name), nullable)
        })
        .collect();
    Schema::new(fields)
}

/// What the CSV decoder reads: the same columns, with timestamps still integers.
fn csv_schema(out: &Schema) -> Schema {
    let fields: Vec<Field> = out
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            Arrow::Timestamp(..) => Field::new(f.name(), Arrow::Int64, f.is_nullable()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new(fields)
}

fn props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("depthbook {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A `Write` that takes one data type's CSV (header first, as `write_csv` writes it) and
/// writes Parquet to `W`. Call `finish` when the CSV has ended; dropping it leaves a file
/// without a footer, which every reader refuses.
pub struct Transcoder<W: Write + Send> {
    decoder: Decoder,
    writer: ArrowWriter<W>,
    schema: SchemaRef,
}

impl<W: Write + Send> std::fmt::Debug for Transcoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> Transcoder<W> {
    pub fn new(out: W, data_type: DataType) -> Result<Self, ExportError> {
        let schema = Arc::new(schema(data_type));
        let decoder = arrow_csv::ReaderBuilder::new(Arc::new(csv_schema(&schema)))
            .with_header(true)
            .with_batch_size(BATCH_ROWS)
            .build_decoder();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props()))?;
        Ok(Transcoder {
            decoder,
            writer,
            schema,
        })
    }

    /// The output written so far (a `Vec` can be drained: the writer counts offsets itself).
    pub fn output(&mut self) -> &mut W {
        self.writer.inner_mut()
    }

    fn write_batch(&mut self) -> Result<(), ExportError> {
        let Some(batch) = self.decoder.flush()? else {
            return Ok(());
        };
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| match f.data_type() {
                Arrow::Timestamp(_, tz) => {
                    let us = c.as_primitive::<Int64Type>();
                    Arc::new(
                        TimestampMicrosecondArray::new(us.values().clone(), us.nulls().cloned())
                            .with_timezone_opt(tz.clone()),
                    ) as ArrayRef
                }
                _ => c.clone(),
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.writer.write(&batch)?;
        Ok(())
    }

    fn decode(&mut self, mut csv: &[u8]) -> Result<(), ExportError> {
        while !csv.is_empty() {
            let read = self.decoder.decode(csv)?;
            csv = &csv[read..];
            if self.decoder.capacity() == 0 || read == 0 {
                self.write_batch()?;
            }
        }
        Ok(())
    }

    /// The last rows, and the range and gaps as metadata.
    fn end(&mut self, range: Range, summary: &Summary) -> Result<(), ExportError> {
        self.decoder.decode(&[])?;
        self.write_batch()?;
        let gaps = serde_json::to_string(&summary.gaps).map_err(std::io::Error::other)?;
        for (key, value) in [
            ("depthbook.from", range.from.to_rfc3339()),
            ("depthbook.to", range.to.to_rfc3339()),
            (GAPS_KEY, gaps),
            (DEPTH_LEVELS_KEY, depth_levels(summary.depth_levels)),
        ] {
            self.writer
                .append_key_value_metadata(KeyValue::new(key.to_owned(), value));
        }
        Ok(())
    }

    /// Ends the file in place (the footer goes to `output`).
    pub fn finish(&mut self, range: Range, summary: &Summary) -> Result<(), ExportError> {
        self.end(range, summary)?;
        self.writer.finish()?;
        Ok(())
    }

    /// Ends the file and returns the output.
    pub fn close(mut self, range: Range, summary: &Summary) -> Result<W, ExportError> {
        self.end(range, summary)?;
        Ok(self.writer.into_inner()?)
    }
}

impl<W: Write + Send> Write for Transcoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.decode(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl From<ArrowError> for ExportError {
    fn from(e: ArrowError) -> Self {
        ExportError::Parquet(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for ExportError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        ExportError::Parquet(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BooleanArray, Decimal128Array};
    use bytes::Bytes;
    use chrono::{TimeZone, Utc};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn range() -> Range {
        let t = |h| {
            Utc.with_ymd_and_hms(2026, 11, 25, h, 0, 0)
                .single()
                .expect("t")
        };
        Range {
            from: t(0),
            to: t(1),
        }
    }

    fn transcode(data_type: DataType, csv: &[&[u8]]) -> RecordBatch {
        let mut t = Transcoder::new(Vec::new(), data_type).expect("writer");
        for piece in csv {
            t.write_all(piece).expect("write");
        }
        let bytes = Bytes::from(t.close(range(), &Summary::default()).expect("close"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        let mut batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        assert_eq!(batches.len(), 1, "a few rows make one batch");
        batches.remove(0)
    }

    #[test]
    fn a_csv_split_anywhere_reads_back_with_exact_decimals_and_utc_microseconds() {
        let csv = b"exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n\
            binance,BTCUSDT,1764028800000001,1764028800000002,true,bid,91234.56000000,0.00012345\n\
            binance,BTCUSDT,1764028800100000,1764028800100100,false,ask,91234.57,0\n";
        let (a, b) = csv.split_at(97);
        let batch = transcode(DataType::IncrementalBookL2, &[a, b]);
        assert_eq!(batch.num_rows(), 2);
        let price = batch
            .column(6)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("decimal");
        assert_eq!(price.value_as_string(0), "91234.56000000");
        assert_eq!(price.value(1), 9_123_457_000_000);
        let amount = batch
            .column(7)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("decimal");
        assert_eq!(amount.value(0), 12_345);
        let ts = batch
            .column(2)
            .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_764_028_800_000_001);
        assert_eq!(ts.timezone(), Some("UTC"));
        let snap = batch
            .column(4)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("bool");
        assert!(snap.value(0) && !snap.value(1));
    }

    #[test]
    fn empty_fields_are_nulls_and_a_header_alone_is_an_empty_readable_file() {
        let header = format!("{}\n", DataType::DerivativeTicker.header());
        let row = b"binance-futures,BTCUSDT,1764028800000000,1764028800000100,1764057600000000,-0.00010000,,,,91200.1,91210.2\n";
        let batch = transcode(DataType::DerivativeTicker, &[header.as_bytes(), row]);
        assert_eq!(batch.num_rows(), 1);
        assert!(batch.column(6).is_null(0), "predicted_funding_rate");
        let rate = batch
            .column(5)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("decimal");
        assert_eq!(rate.value(0), -10_000);

        let mut t = Transcoder::new(Vec::new(), DataType::Trades).expect("writer");
        t.write_all(format!("{}\n", DataType::Trades.header()).as_bytes())
            .expect("write");
        let bytes = Bytes::from(t.close(range(), &Summary::default()).expect("close"));
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("parquet");
        assert_eq!(builder.metadata().file_metadata().num_rows(), 0);
        assert_eq!(builder.schema().fields().len(), 8);
    }

    #[test]
    fn a_row_that_is_not_the_schema_is_an_error_not_a_guess() {
        let mut t = Transcoder::new(Vec::new(), DataType::Trades).expect("writer");
        let bad = format!(
            "{}\nbinance,BTCUSDT,1,2,x,buy,1.0,2.0\n",
            DataType::Trades.header()
        );
        t.write_all(bad.as_bytes()).expect("buffered");
        let err = t
            .close(range(), &Summary::default())
            .expect_err("id is not an integer");
        assert!(err.to_string().contains("parquet"), "{err}");
    }
}
