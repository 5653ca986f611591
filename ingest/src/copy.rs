//! PostgreSQL's binary COPY format, encoded into one byte buffer per batch.
//!
//! tokio-postgres's `BinaryCopyInWriter` streams rows straight into the connection; we encode
//! the whole batch ourselves instead, because the very same bytes are what the disk spool keeps
//! while the database is down and what is replayed afterwards: a spooled batch is replayed
//! exactly as it would have been written.

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// `numeric` type oid, for arrays of it.
const NUMERIC_OID: i32 = 1700;
const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;

/// One batch being encoded: header, rows, trailer.
#[derive(Debug)]
pub struct CopyBuf {
    buf: Vec<u8>,
    rows: usize,
}

impl Default for CopyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyBuf {
    pub fn new() -> CopyBuf {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyBuf { buf, rows: 0 }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Starts a row of `fields` columns.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.rows += 1;
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    pub fn int4(&mut self, v: i32) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub fn int8(&mut self, v: i64) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub fn opt_int4(&mut self, v: Option<i32>) -> &mut Self {
        match v {
            Some(v) => self.int4(v),
            None => self.null(),
        }
    }

    pub fn opt_int8(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.int8(v),
            None => self.null(),
        }
    }

    pub fn float8(&mut self, v: f64) -> &mut Self {
        self.field(&v.to_bits().to_be_bytes())
    }

    pub fn opt_float8(&mut self, v: Option<f64>) -> &mut Self {
        match v.filter(|x| x.is_finite()) {
            Some(v) => self.float8(v),
            None => self.null(),
        }
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.field(&[u8::from(v)])
    }

    pub fn text(&mut self, v: &str) -> &mut Self {
        self.field(v.as_bytes())
    }

    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// `timestamptz` from Unix milliseconds.
    pub fn ts_ms(&mut self, ms: u64) -> &mut Self {
        let us = (ms as i64).saturating_mul(1000) - PG_EPOCH_OFFSET_US;
        self.field(&us.to_be_bytes())
    }

    pub fn opt_ts_ms(&mut self, ms: Option<u64>) -> &mut Self {
        match ms {
            Some(ms) => self.ts_ms(ms),
            None => self.null(),
        }
    }

    /// `numeric` from an exact `mantissa / 10^scale`.
    pub fn numeric(&mut self, mantissa: i128, scale: u32) -> &mut Self {
        // The length goes first: reserve it, encode in place, then fill it in.
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        encode_numeric(&mut self.buf, mantissa, scale);
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self
    }

    pub fn opt_numeric(&mut self, v: Option<(i128, u32)>) -> &mut Self {
        match v {
            Some((mantissa, scale)) => self.numeric(mantissa, scale),
            None => self.null(),
        }
    }

    /// `numeric` from e8 units.
    pub fn e8(&mut self, v: i64) -> &mut Self {
        self.numeric(i128::from(v), 8)
    }

    pub fn opt_e8(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.e8(v),
            None => self.null(),
        }
    }

    /// `numeric[]` from e8 units.
    pub fn e8_array(&mut self, values: impl ExactSizeIterator<Item = i64>) -> &mut Self {
        let mut tmp = Vec::with_capacity(16 + values.len() * 16);
        tmp.extend_from_slice(&1i32.to_be_bytes()); // dimensions
        tmp.extend_from_slice(&0i32.to_be_bytes()); // no nulls
        tmp.extend_from_slice(&NUMERIC_OID.to_be_bytes());
        tmp.extend_from_slice(&(values.len() as i32).to_be_bytes());
        tmp.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        let mut el = Vec::with_capacity(24);
        for v in values {
            el.clear();
            encode_numeric(&mut el, i128::from(v), 8);
            tmp.extend_from_slice(&(el.len() as i32).to_be_bytes());
            tmp.extend_from_slice(&el);
        }
        self.field(&tmp)
    }

    /// The finished COPY payload.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

/// Bytes before the first row: the signature, the flags and the header extension's length.
const HEADER_LEN: usize = 19;

/// A batch encoded before a table gained trailing nullable columns, widened to `fields` per
/// row with NULLs, so a spool written by an older version replays into the current table.
/// `None` when the bytes are not a binary COPY this module wrote (or a row has more fields).
pub fn pad_rows(bytes: &[u8], fields: i16) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    out.extend_from_slice(bytes.get(..HEADER_LEN)?);
    let mut at = HEADER_LEN;
    loop {
        let count = i16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        if count == -1 {
            out.extend_from_slice(&count.to_be_bytes());
            return (at == bytes.len()).then_some(out);
        }
        if count > fields || count < 0 {
            return None;
        }
        out.extend_from_slice(&fields.to_be_bytes());
        for _ in 0..count {
            let len = i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
            let end = at + 4 + usize::try_from(len).unwrap_or(0);
            out.extend_from_slice(bytes.get(at..end)?);
            at = end;
        }
        for _ in count..fields {
            out.extend_from_slice(&(-1i32).to_be_bytes());
        }
    }
}

/// PostgreSQL's binary `numeric`: base-10000 digits with a weight, sign and display scale.
/// Trailing zeros are dropped from the display scale (as `numeric` does for "1.50000000"
/// stored as 1.5: the value is the same). No allocation and, for values that fit 64 bits
/// (every e8 price and quantity), no 128-bit division: this runs for every level stored.
fn encode_numeric(out: &mut Vec<u8>, mantissa: i128, scale: u32) {
    let neg = mantissa < 0;
    let (m, scale) = strip_trailing_zeros(mantissa.unsigned_abs(), scale);
    // Align the fraction to whole base-10000 groups: pad to a multiple of 4 decimals.
    let pad = (4 - scale % 4) % 4;
    let frac_groups = ((scale + pad) / 4) as i32;
    let mut groups = [0u16; 10]; // least significant first
    let len = base_10000(m * 10u128.pow(pad), &mut groups);
    let mut weight = len as i32 - 1 - frac_groups;
    // Trailing zero groups (least significant) are dropped; leading ones never occur.
    let low = groups[..len].iter().take_while(|g| **g == 0).count();
    let digits = &groups[low..len];
    if digits.is_empty() {
        weight = 0;
    }
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&(if neg { NUMERIC_NEG } else { NUMERIC_POS }).to_be_bytes());
    out.extend_from_slice(&(scale as i16).to_be_bytes());
    for g in digits.iter().rev() {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

/// `m / 10^scale` with the fewest decimals; zero has scale 0.
fn strip_trailing_zeros(m: u128, mut scale: u32) -> (u128, u32) {
    if m == 0 {
        return (0, 0);
    }
    if let Ok(mut small) = u64::try_from(m) {
        while scale > 0 && small.is_multiple_of(10) {
            small /= 10;
            scale -= 1;
        }
        return (u128::from(small), scale);
    }
    let mut m = m;
    while scale > 0 && m.is_multiple_of(10) {
        m /= 10;
        scale -= 1;
    }
    (m, scale)
}

/// `x` in base 10000, least significant digit first, without leading zero digits; returns
/// how many digits were written (0 for zero).
fn base_10000(mut x: u128, groups: &mut [u16; 10]) -> usize {
    const TEN_16: u128 = 10_000_000_000_000_000;
    let mut n = 0;
    // Above 64 bits, four digits at a time by one 128-bit division each.
    while x > u128::from(u64::MAX) {
        let mut low = (x % TEN_16) as u64;
        for _ in 0..4 {
            groups[n] = (low % 10_000) as u16;
            low /= 10_000;
            n += 1;
        }
        x /= TEN_16;
    }
    let mut small = x as u64;
    while small > 0 {
        groups[n] = (small % 10_000) as u16;
        small /= 10_000;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(m: i128, s: u32) -> Vec<i16> {
        let mut v = Vec::new();
        encode_numeric(&mut v, m, s);
        v.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn an_older_batch_is_widened_with_nulls_and_garbage_is_refused() {
        let mut old = CopyBuf::new();
        old.row(2).int4(7).null();
        old.row(2).int4(8).int4(9);
        let old = old.finish();
        let mut new = CopyBuf::new();
        new.row(3).int4(7).null().null();
        new.row(3).int4(8).int4(9).null();
        assert_eq!(pad_rows(&old, 3), Some(new.finish()));
        assert_eq!(pad_rows(&old, 2).as_deref(), Some(&old[..]));
        assert_eq!(pad_rows(&old, 1), None, "a row wider than the table");
        assert_eq!(pad_rows(&old[..old.len() - 3], 3), None, "cut short");
        assert_eq!(pad_rows(b"not a copy", 3), None);
    }

    /// The value a binary `numeric` stands for, as `mantissa / 10^dscale`.
    fn decode(v: &[i16]) -> (i128, u32) {
        let (n, weight, sign, dscale) = (v[0] as usize, v[1] as i32, v[2], v[3] as u32);
        let mut m: i128 = 0;
        for d in &v[4..4 + n] {
            m = m * 10_000 + i128::from(*d);
        }
        // m holds digits down to the 10000^(weight - n + 1) place; rescale to dscale decimals.
        let exp = 4 * (weight - n as i32 + 1) + dscale as i32;
        let m = if exp >= 0 {
            m * 10i128.pow(exp as u32)
        } else {
            m / 10i128.pow((-exp) as u32)
        };
        (if sign == 0x4000 { -m } else { m }, dscale)
    }

    #[test]
    fn numeric_round_trips_across_64_bits() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every magnitude: small, e8-sized, and beyond 64 bits.
            let m = match i % 3 {
                0 => i128::from(x >> (x % 60)),
                1 => i128::from(x) * i128::from(x >> 20),
                _ => -i128::from(x % 1_000_000_000_000),
            };
            let scale = i % 12;
            let (back, dscale) = decode(&enc(m, scale));
            assert!(dscale <= scale, "{m} e-{scale}");
            assert_eq!(
                back * 10i128.pow(scale - dscale),
                m,
                "{m} e-{scale} came back as {back} e-{dscale}"
            );
        }
    }

    #[test]
    fn numeric_encoding_matches_postgres() {
        // ndigits, weight, sign, dscale, digits...
        assert_eq!(
            enc(6_723_401_000_000, 8),
            vec![3, 1, 0, 2, 6, 7234, 100],
            "67234.01"
        );
        assert_eq!(enc(1_634_790, 8), vec![2, -1, 0, 7, 163, 4790], "0.0163479");
        assert_eq!(enc(0, 8), vec![0, 0, 0, 0]);
        assert_eq!(enc(100_000_000, 8), vec![1, 0, 0, 0, 1], "1");
        assert_eq!(enc(1, 8), vec![1, -2, 0, 8, 1], "0.00000001");
        assert_eq!(enc(-150, 2), vec![2, 0, 0x4000, 1, 1, 5000], "-1.5");
        assert_eq!(
            enc(100_000_000_000_000, 8),
            vec![1, 1, 0, 0, 100],
            "1000000"
        );
    }
}
