//! Checkpoints: what a stopped or crashed migration needs to continue where it was.
//!
//! Invariant: a checkpoint never claims more than was done. The copy watermark is the upper
//! key of the last committed chunk; the binlog position is the end of the last transaction the
//! replay committed to the shadow table. Resuming replays from that position (re-applying is
//! idempotent) and copies from the watermark (`INSERT IGNORE` keeps replayed rows).

use mysql_async::Value;
use serde::{Deserialize, Serialize};

use crate::binlog::BinlogPos;
use crate::progress::Progress;
use crate::shadow::HelperNames;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub names: HelperNames,
    /// Every row with a key at or below this was copied; `None` if no chunk committed yet.
    pub copy_watermark: Option<Vec<KeyValue>>,
    pub copy_done: bool,
    /// Replay restarts here.
    pub applied: BinlogPos,
    pub rows_copied: u64,
}

/// A key value in a form that survives JSON (binary strings as hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "lowercase")]
pub enum KeyValue {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// Hex of the bytes.
    Bytes(String),
    Date(u16, u8, u8, u8, u8, u8, u32),
    Time(bool, u32, u8, u8, u8, u32),
}

impl From<&Value> for KeyValue {
    fn from(v: &Value) -> KeyValue {
        match v {
            Value::NULL => KeyValue::Null,
            Value::Int(i) => KeyValue::Int(*i),
            Value::UInt(u) => KeyValue::UInt(*u),
            Value::Float(f) => KeyValue::Float(*f),
            Value::Double(f) => KeyValue::Double(*f),
            Value::Bytes(b) => KeyValue::Bytes(b.iter().map(|x| format!("{x:02x}")).collect()),
            Value::Date(y, mo, d, h, mi, s, us) => KeyValue::Date(*y, *mo, *d, *h, *mi, *s, *us),
            Value::Time(n, d, h, mi, s, us) => KeyValue::Time(*n, *d, *h, *mi, *s, *us),
        }
    }
}

impl TryFrom<&KeyValue> for Value {
    type Error = String;
    fn try_from(k: &KeyValue) -> Result<Value, String> {
        Ok(match k {
            KeyValue::Null => Value::NULL,
            KeyValue::Int(i) => Value::Int(*i),
            KeyValue::UInt(u) => Value::UInt(*u),
            KeyValue::Float(f) => Value::Float(*f),
            KeyValue::Double(f) => Value::Double(*f),
            KeyValue::Bytes(h) => {
                if h.len() % 2 != 0 {
                    return Err(format!("odd-length hex in checkpoint key {h:?}"));
                }
                let bytes = (0..h.len())
                    .step_by(2)
                    .map(|i| {
                        u8::from_str_radix(&h[i..i + 2], 16)
                            .map_err(|_| format!("bad hex in checkpoint key {h:?}"))
                    })
                    .collect::<Result<Vec<u8>, String>>()?;
                Value::Bytes(bytes)
            }
            KeyValue::Date(y, mo, d, h, mi, s, us) => Value::Date(*y, *mo, *d, *h, *mi, *s, *us),
            KeyValue::Time(n, d, h, mi, s, us) => Value::Time(*n, *d, *h, *mi, *s, *us),
        })
    }
}

impl Checkpoint {
    /// The checkpoint of a running migration, once its helpers exist and the tail started.
    pub fn of(progress: &Progress) -> Option<Checkpoint> {
        let st = progress.status();
        Some(Checkpoint {
            names: st.names?,
            copy_watermark: st
                .copy_watermark
                .map(|k| k.iter().map(KeyValue::from).collect()),
            copy_done: st.copy_done,
            applied: st.applied_pos?,
            rows_copied: Progress::get(&progress.rows_copied),
        })
    }

    pub fn watermark_values(&self) -> Result<Option<Vec<Value>>, String> {
        self.copy_watermark
            .as_ref()
            .map(|k| k.iter().map(Value::try_from).collect())
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_survive_json() {
        let key = vec![
            Value::Int(-5),
            Value::UInt(u64::MAX),
            Value::Bytes(vec![0, 0xff, b'a']),
            Value::Date(2024, 2, 29, 23, 59, 59, 123_456),
            Value::NULL,
        ];
        let cp = Checkpoint {
            names: HelperNames::for_table("t", "20260101000000").unwrap(),
            copy_watermark: Some(key.iter().map(KeyValue::from).collect()),
            copy_done: false,
            applied: BinlogPos {
                file: "binlog.000002".into(),
                pos: 1234,
                gtid: Some("0-1-77".into()),
            },
            rows_copied: 42,
        };
        let json = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cp);
        assert_eq!(back.watermark_values().unwrap().unwrap(), key);
    }
}
