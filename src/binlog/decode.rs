//! Row images from the binlog, decoded into values the replay can write back byte-exactly.
//!
//! mysql_common decodes single values well but its row decoder builds column metadata per row
//! (slow) and gets some types wrong on MariaDB, so this module walks row images itself and
//! applies the fix-ups measured in `shared/notes/mysql-mariadb-facts.md` at the source:
//! unsigned integers from information_schema, sign-extended MEDIUMINT, negative TIME(1)/TIME(2),
//! TIMESTAMP epochs turned into UTC text, YEAR 0, ENUM/SET as member names (so a reordered
//! member list in the new schema still gets the right member), BIT as an integer, MariaDB's
//! INET4/INET6/UUID as their text form. Temporal values become text so zero and partial dates
//! survive.
//!
//! Invariant: a value is either decoded exactly or the row is refused with an error; never
//! guessed.

use std::io;

use mysql_async::Value;
use mysql_common::binlog::events::{RowsEventData, TableMapEvent};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;

use crate::clock::utc_datetime;
use crate::progress::ChangeKind;
use crate::schema::TableSchema;

/// One decoded row change. Images hold every column of the table in ordinal order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub kind: ChangeKind,
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
}

#[derive(Debug, Clone)]
enum Decode {
    /// Let mysql_common decode the value; it is right for this type.
    Plain,
    Int {
        bytes: usize,
        unsigned: bool,
    },
    Int24 {
        unsigned: bool,
    },
    Float,
    Double,
    Year,
    /// TIME2 with 1 or 2 fractional digits, whose negative values mysql_common mis-decodes.
    Time2Short {
        dec: u8,
    },
    Time,
    Date,
    Timestamp {
        dec: u8,
    },
    Enum(Vec<String>),
    Set(Vec<String>),
    Bit,
    Json,
    /// MariaDB's fixed-size binary types: INET4, INET6, UUID.
    Fixed(Fixed),
    /// BINARY(n): the binlog strips trailing zero bytes, which the column pads back on write
    /// but which a key comparison needs (binary strings compare without padding).
    Binary {
        len: usize,
    },
}

/// A MariaDB fixed binary type. The binlog logs it like a CHAR: a length byte, then the value
/// in its in-memory (big-endian, unswapped) byte order with trailing zero bytes stripped
/// (`'::'` and `'0.0.0.0'` arrive empty). Measured on MariaDB 10.11: even time-based UUIDs,
/// which the server may store segment-swapped, arrive in their textual byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixed {
    Inet4,
    Inet6,
    Uuid,
}

impl Fixed {
    fn of(data_type: &str) -> Option<Fixed> {
        match data_type {
            "inet4" => Some(Fixed::Inet4),
            "inet6" => Some(Fixed::Inet6),
            "uuid" => Some(Fixed::Uuid),
            _ => None,
        }
    }

    fn len(self) -> usize {
        match self {
            Fixed::Inet4 => 4,
            Fixed::Inet6 | Fixed::Uuid => 16,
        }
    }

    /// The value as the text the server parses back into the same value. Written as text
    /// because a bound byte string in the session charset is parsed as text by these types
    /// (raw bytes fail with ERROR 1292).
    fn text(self, stripped: &[u8]) -> io::Result<Value> {
        if stripped.len() > self.len() {
            return Err(invalid(format!(
                "{self:?} value of {} bytes, expected at most {}",
                stripped.len(),
                self.len()
            )));
        }
        let mut b = [0u8; 16];
        b[..stripped.len()].copy_from_slice(stripped);
        let text = match self {
            Fixed::Inet4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
            Fixed::Inet6 => std::net::Ipv6Addr::from(b).to_string(),
            Fixed::Uuid => {
                let mut t = String::with_capacity(36);
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        t.push('-');
                    }
                    t.push_str(&format!("{byte:02x}"));
                }
                t
            }
        };
        Ok(Value::Bytes(text.into_bytes()))
    }
}

#[derive(Debug, Clone)]
struct ColumnDecoder {
    ty: ColumnType,
    meta: Vec<u8>,
    unsigned: bool,
    how: Decode,
}

/// Decodes the rows of one table, built from its TABLE_MAP event and information_schema.
#[derive(Debug, Clone)]
pub struct TableDecoder {
    columns: Vec<ColumnDecoder>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl TableDecoder {
    /// Fails when the binlog's column list does not match the table model: the table's schema
    /// changed and rows would land in the wrong columns.
    pub fn new(tme: &TableMapEvent<'_>, schema: &TableSchema) -> Result<TableDecoder, String> {
        let n = tme.columns_count() as usize;
        if n != schema.columns.len() {
            return Err(format!(
                "the binlog has {n} columns for {}.{} but the table had {} when the migration started",
                schema.database,
                schema.name,
                schema.columns.len()
            ));
        }
        // get_column_metadata walks all earlier columns each call; compute offsets once here.
        let mut columns = Vec::with_capacity(n);
        for (i, col) in schema.columns.iter().enumerate() {
            let ty = match tme.get_column_type(i) {
                Ok(Some(ty)) => ty,
                _ => return Err(format!("unknown binlog type for column {}", col.name)),
            };
            let meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
            let dt = col.data_type.as_str();
            let how = match ty {
                ColumnType::MYSQL_TYPE_TINY => Decode::Int {
                    bytes: 1,
                    unsigned: col.unsigned,
                },
                ColumnType::MYSQL_TYPE_SHORT => Decode::Int {
                    bytes: 2,
                    unsigned: col.unsigned,
                },
                ColumnType::MYSQL_TYPE_LONG => Decode::Int {
                    bytes: 4,
                    unsigned: col.unsigned,
                },
                ColumnType::MYSQL_TYPE_LONGLONG => Decode::Int {
                    bytes: 8,
                    unsigned: col.unsigned,
                },
                ColumnType::MYSQL_TYPE_INT24 => Decode::Int24 {
                    unsigned: col.unsigned,
                },
                ColumnType::MYSQL_TYPE_FLOAT => Decode::Float,
                ColumnType::MYSQL_TYPE_DOUBLE => Decode::Double,
                ColumnType::MYSQL_TYPE_YEAR => Decode::Year,
                ColumnType::MYSQL_TYPE_TIME2 if matches!(meta.first(), Some(1) | Some(2)) => {
                    Decode::Time2Short { dec: meta[0] }
                }
                ColumnType::MYSQL_TYPE_TIME2 | ColumnType::MYSQL_TYPE_TIME => Decode::Time,
                ColumnType::MYSQL_TYPE_DATETIME2
                | ColumnType::MYSQL_TYPE_DATETIME
                | ColumnType::MYSQL_TYPE_NEWDATE
                | ColumnType::MYSQL_TYPE_DATE => Decode::Date,
                ColumnType::MYSQL_TYPE_TIMESTAMP2 => Decode::Timestamp {
                    dec: meta.first().copied().unwrap_or(0),
                },
                ColumnType::MYSQL_TYPE_TIMESTAMP => Decode::Timestamp { dec: 0 },
                ColumnType::MYSQL_TYPE_ENUM => Decode::Enum(col.members.clone()),
                ColumnType::MYSQL_TYPE_SET => Decode::Set(col.members.clone()),
                ColumnType::MYSQL_TYPE_BIT => Decode::Bit,
                ColumnType::MYSQL_TYPE_JSON => Decode::Json,
                ColumnType::MYSQL_TYPE_STRING if dt == "binary" => Decode::Binary {
                    len: string_len(&meta),
                },
                _ => Decode::Plain,
            };
            let how = match (Fixed::of(dt), ty) {
                (None, _) => how,
                (Some(kind), ColumnType::MYSQL_TYPE_STRING) => Decode::Fixed(kind),
                (Some(_), _) => {
                    return Err(format!(
                        "column {} is {} in the table but binlog type {:?}",
                        col.name, col.column_type, ty
                    ))
                }
            };
            // A type the table model disagrees with means the table changed under us.
            let expected_int =
                matches!(dt, "tinyint" | "smallint" | "mediumint" | "int" | "bigint");
            if expected_int != matches!(how, Decode::Int { .. } | Decode::Int24 { .. }) {
                return Err(format!(
                    "column {} is {} in the table but binlog type {:?}",
                    col.name, col.column_type, ty
                ));
            }
            columns.push(ColumnDecoder {
                ty,
                meta,
                unsigned: col.unsigned,
                how,
            });
        }
        Ok(TableDecoder { columns })
    }

    /// Decodes every row of a rows event.
    pub fn decode(&self, ev: &RowsEventData<'_>) -> io::Result<Vec<RowChange>> {
        let kind =
            match ev {
                RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                    ChangeKind::Insert
                }
                RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => {
                    ChangeKind::Update
                }
                RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                    ChangeKind::Delete
                }
                RowsEventData::PartialUpdateRowsEvent(_) => return Err(invalid(
                    "partial JSON update events are not supported: set binlog_row_value_options=''",
                )),
            };
        let n = self.columns.len();
        if ev.num_columns() as usize != n {
            return Err(invalid(
                "rows event column count differs from the table map",
            ));
        }
        let full = |bits: Option<usize>| bits.is_none_or(|b| b == n);
        let before_bits = ev.columns_before_image().map(|b| b.count_ones());
        let after_bits = ev.columns_after_image().map(|b| b.count_ones());
        if !full(before_bits) || !full(after_bits) {
            return Err(invalid("row image is not FULL: set binlog_row_image=FULL"));
        }
        let mut buf = ParseBuf(ev.rows_data());
        let mut changes = Vec::new();
        while !buf.is_empty() {
            let change = match kind {
                ChangeKind::Insert => RowChange {
                    kind,
                    before: None,
                    after: Some(self.image(&mut buf)?),
                },
                ChangeKind::Delete => RowChange {
                    kind,
                    before: Some(self.image(&mut buf)?),
                    after: None,
                },
                ChangeKind::Update => {
                    let before = self.image(&mut buf)?;
                    let after = self.image(&mut buf)?;
                    RowChange {
                        kind,
                        before: Some(before),
                        after: Some(after),
                    }
                }
            };
            changes.push(change);
        }
        Ok(changes)
    }

    fn image(&self, buf: &mut ParseBuf<'_>) -> io::Result<Vec<Value>> {
        let n = self.columns.len();
        let nulls = buf
            .checked_eat(n.div_ceil(8))
            .ok_or_else(|| invalid("truncated row image"))?;
        let mut values = Vec::with_capacity(n);
        for (i, col) in self.columns.iter().enumerate() {
            if nulls[i / 8] & (1 << (i % 8)) != 0 {
                values.push(Value::NULL);
            } else {
                values.push(col.value(buf)?);
            }
        }
        Ok(values)
    }
}

fn eat<'a>(buf: &mut ParseBuf<'a>, n: usize) -> io::Result<&'a [u8]> {
    buf.checked_eat(n).ok_or_else(|| invalid("truncated value"))
}

impl ColumnDecoder {
    fn plain(&self, buf: &mut ParseBuf<'_>) -> io::Result<Value> {
        // mysql_common ties the metadata's lifetime to the buffer's: parse from a reborrowed
        // view and advance the caller's buffer by what was consumed.
        let mut view = ParseBuf(buf.0);
        let v: BinlogValue<'_> =
            view.parse((self.ty, self.meta.as_slice(), self.unsigned, false))?;
        let v = v.into_owned();
        let consumed = buf.0.len() - view.0.len();
        buf.0 = &buf.0[consumed..];
        match v {
            BinlogValue::Value(v) => Ok(v),
            other => Value::try_from(other).map_err(|e| invalid(e.to_string())),
        }
    }

    fn value(&self, buf: &mut ParseBuf<'_>) -> io::Result<Value> {
        Ok(match &self.how {
            Decode::Plain => self.plain(buf)?,
            Decode::Int { bytes, unsigned } => {
                let b = eat(buf, *bytes)?;
                let mut raw = [0u8; 8];
                raw[..*bytes].copy_from_slice(b);
                let u = u64::from_le_bytes(raw);
                if *unsigned {
                    Value::UInt(u)
                } else {
                    let shift = 64 - 8 * *bytes as u32;
                    Value::Int(((u << shift) as i64) >> shift)
                }
            }
            Decode::Int24 { unsigned } => {
                let b = eat(buf, 3)?;
                let u = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
                if *unsigned {
                    Value::UInt(u64::from(u))
                } else {
                    Value::Int(i64::from(((u << 8) as i32) >> 8))
                }
            }
            Decode::Float => {
                let b = eat(buf, 4)?;
                Value::Float(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            Decode::Double => {
                let b = eat(buf, 8)?;
                let mut raw = [0u8; 8];
                raw.copy_from_slice(b);
                Value::Double(f64::from_le_bytes(raw))
            }
            Decode::Year => {
                let y = eat(buf, 1)?[0];
                Value::Int(if y == 0 { 0 } else { 1900 + i64::from(y) })
            }
            Decode::Time2Short { dec } => {
                let b = eat(buf, 4)?;
                time2_short(b, *dec)
            }
            Decode::Time => temporal_text(self.plain(buf)?),
            Decode::Date => temporal_text(self.plain(buf)?),
            Decode::Timestamp { dec } => timestamp_text(self.plain(buf)?, *dec)?,
            Decode::Enum(members) => match self.plain(buf)? {
                Value::Int(0) => Value::Int(0),
                Value::Int(i) => members
                    .get(i as usize - 1)
                    .map(|m| Value::Bytes(m.clone().into_bytes()))
                    .ok_or_else(|| invalid(format!("ENUM index {i} outside the member list")))?,
                other => other,
            },
            Decode::Set(members) => match self.plain(buf)? {
                Value::Bytes(bits) => {
                    let mut names = Vec::new();
                    for (i, m) in members.iter().enumerate() {
                        if bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
                            names.push(m.as_str());
                        }
                    }
                    Value::Bytes(names.join(",").into_bytes())
                }
                other => other,
            },
            Decode::Bit => match self.plain(buf)? {
                Value::Bytes(b) => {
                    Value::UInt(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
                }
                other => other,
            },
            Decode::Json => match self.plain(buf)? {
                Value::Bytes(b) => Value::Bytes(b),
                other => other,
            },
            Decode::Binary { len } => match self.plain(buf)? {
                Value::Bytes(mut b) if b.len() <= *len => {
                    b.resize(*len, 0);
                    Value::Bytes(b)
                }
                other => {
                    return Err(invalid(format!("BINARY({len}) value decoded as {other:?}")));
                }
            },
            Decode::Fixed(kind) => match self.plain(buf)? {
                Value::Bytes(b) => kind.text(&b)?,
                other => {
                    return Err(invalid(format!("{kind:?} decoded as {other:?}")));
                }
            },
        })
    }
}

/// The byte length of a CHAR/BINARY column from its TABLE_MAP metadata (real type, length),
/// where lengths above 255 borrow two bits of the type byte (MySQL bug #37426).
fn string_len(meta: &[u8]) -> usize {
    match meta {
        [b0, b1, ..] if b0 & 0x30 != 0x30 => {
            usize::from(*b1) | (usize::from((b0 & 0x30) ^ 0x30) << 4)
        }
        [_, b1, ..] => usize::from(*b1),
        _ => 0,
    }
}

/// TIME2 with 1-2 fractional digits: 3 bytes of offset integer part, 1 byte of hundredths.
/// Mirrors the server's `my_time_packed_from_binary`, in signed arithmetic.
fn time2_short(b: &[u8], dec: u8) -> Value {
    const TIMEF_INT_OFS: i64 = 0x80_0000;
    let mut intpart =
        (i64::from(b[0]) << 16 | i64::from(b[1]) << 8 | i64::from(b[2])) - TIMEF_INT_OFS;
    let mut frac = i64::from(b[3]);
    if intpart < 0 && frac > 0 {
        intpart += 1;
        frac -= 0x100;
    }
    let neg = intpart < 0 || (intpart == 0 && frac < 0);
    let (int_abs, frac_abs) = (intpart.abs(), frac.abs());
    let hours = (int_abs >> 12) % (1 << 10);
    let minutes = (int_abs >> 6) % (1 << 6);
    let seconds = int_abs % (1 << 6);
    let sign = if neg { "-" } else { "" };
    let digits = usize::from(dec);
    let frac_text = format!("{frac_abs:02}");
    Value::Bytes(
        format!(
            "{sign}{hours:02}:{minutes:02}:{seconds:02}.{}",
            &frac_text[..digits]
        )
        .into_bytes(),
    )
}

/// DATE/DATETIME/TIME values as text, so zero and partial dates are written as they were.
fn temporal_text(v: Value) -> Value {
    match v {
        Value::Date(y, mo, d, h, mi, s, us) => Value::Bytes(
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}").into_bytes(),
        ),
        Value::Time(neg, days, h, mi, s, us) => {
            let hours = days * 24 + u32::from(h);
            let sign = if neg { "-" } else { "" };
            Value::Bytes(format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}").into_bytes())
        }
        other => other,
    }
}

/// TIMESTAMP arrives as UTC epoch text (`sec[.frac]`) or an integer; 0 is the zero timestamp.
fn timestamp_text(v: Value, dec: u8) -> io::Result<Value> {
    let text = match v {
        Value::Bytes(b) => {
            String::from_utf8(b).map_err(|_| invalid("TIMESTAMP text is not UTF-8"))?
        }
        Value::Int(i) => i.to_string(),
        other => return Ok(other),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((&text, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| invalid(format!("bad TIMESTAMP {text:?}")))?;
    let frac_zero = frac.bytes().all(|b| b == b'0');
    if secs == 0 && frac_zero {
        return Ok(Value::Bytes(b"0000-00-00 00:00:00".to_vec()));
    }
    let mut out = utc_datetime(secs);
    if dec > 0 {
        out.push('.');
        out.push_str(&format!("{frac:0<6}"));
    }
    Ok(Value::Bytes(out.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Value) -> String {
        match v {
            Value::Bytes(b) => String::from_utf8(b).unwrap(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn negative_short_time_fractions() {
        // -00:00:01.50 in TIME(2): intpart = -2 + 1, frac 0x100 - 50.
        let enc = |int: i64, frac: u8| {
            let v = (int + 0x80_0000) as u32;
            [(v >> 16) as u8, (v >> 8) as u8, v as u8, frac]
        };
        assert_eq!(text(time2_short(&enc(-2, 206), 2)), "-00:00:01.50");
        assert_eq!(text(time2_short(&enc(1, 50), 2)), "00:00:01.50");
        // 838:59:59.9 in TIME(1): hours 838 << 12 | 59 << 6 | 59.
        let int = (838 << 12) | (59 << 6) | 59;
        assert_eq!(text(time2_short(&enc(int, 90), 1)), "838:59:59.9");
        assert_eq!(
            // The stored fraction of a negative value is 0x100 - 90.
            text(time2_short(&enc(-int - 1, 166), 1)),
            "-838:59:59.9"
        );
        assert_eq!(text(time2_short(&enc(-1, 0), 2)), "-00:00:01.00");
        assert_eq!(text(time2_short(&enc(0, 0), 2)), "00:00:00.00");
    }

    #[test]
    fn mariadb_fixed_types_become_text_with_stripped_zeros_restored() {
        assert_eq!(text(Fixed::Inet4.text(&[]).unwrap()), "0.0.0.0");
        assert_eq!(text(Fixed::Inet4.text(&[10, 1, 2]).unwrap()), "10.1.2.0");
        assert_eq!(text(Fixed::Inet6.text(&[]).unwrap()), "::");
        assert_eq!(text(Fixed::Inet6.text(&[0xfe, 0x80]).unwrap()), "fe80::");
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4];
        assert_eq!(text(Fixed::Inet6.text(&mapped).unwrap()), "::ffff:1.2.3.4");
        assert_eq!(
            text(
                Fixed::Uuid
                    .text(&[0x6c, 0xcd, 0x78, 0x0c, 0xba, 0xba, 0x10, 0x26, 0x95])
                    .unwrap()
            ),
            "6ccd780c-baba-1026-9500-000000000000"
        );
        assert!(Fixed::Inet4.text(&[1, 2, 3, 4, 5]).is_err());
    }

    #[test]
    fn string_lengths_from_table_map_metadata() {
        // BINARY(16): real type 0xfe, length 16.
        assert_eq!(string_len(&[0xfe, 16]), 16);
        assert_eq!(string_len(&[0xfe, 255]), 255);
        // CHAR(255) in utf8mb4, 1020 bytes: 0x3fc, the high bits folded into the type byte.
        assert_eq!(string_len(&[0xce, 0xfc]), 1020);
    }

    #[test]
    fn timestamps_become_utc_text() {
        let v = timestamp_text(Value::Bytes(b"1709294400.250000".to_vec()), 6).unwrap();
        assert_eq!(text(v), "2024-03-01 12:00:00.250000");
        let v = timestamp_text(Value::Bytes(b"1709294400".to_vec()), 0).unwrap();
        assert_eq!(text(v), "2024-03-01 12:00:00");
        let v = timestamp_text(Value::Bytes(b"0".to_vec()), 3).unwrap();
        assert_eq!(text(v), "0000-00-00 00:00:00");
    }

    #[test]
    fn temporal_values_as_text() {
        assert_eq!(
            text(temporal_text(Value::Date(0, 0, 0, 0, 0, 0, 0))),
            "0000-00-00 00:00:00.000000"
        );
        assert_eq!(
            text(temporal_text(Value::Time(true, 1, 2, 3, 4, 5))),
            "-26:03:04.000005"
        );
    }
}
