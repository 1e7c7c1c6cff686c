//! One record line: how it is written (head keys in a fixed order, then the type's fields), how
//! it chains to the previous line (`prev`), and how it is read back.
use std::cell::RefCell;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde::ser::{Impossible, SerializeMap, SerializeStruct, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::merkle::{Hash, leaf_hash};

/// The format version written in every record's `v`.
pub const VERSION: u64 = 1;

/// The keys every record starts with, in this order.
pub const HEAD_KEYS: [&str; 8] = ["v", "log", "seq", "epoch", "ts", "prev", "id", "type"];

/// The `prev` of record 0: `SHA-256("portcullis-audit-v1 genesis\n" || origin)`.
pub fn genesis(origin: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(b"portcullis-audit-v1 genesis\n");
    h.update(origin.as_bytes());
    h.finalize().into()
}

/// RFC 3339 UTC with microseconds: `2026-11-29T02:33:01.123456Z`.
pub fn format_ts(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// Standard padded base64 of a hash, as `prev`, frontiers and roots are written.
pub fn encode_hash(hash: &Hash) -> String {
    BASE64.encode(hash)
}

/// A hash from standard padded base64.
pub fn decode_hash(text: &str) -> Option<Hash> {
    BASE64.decode(text).ok()?.try_into().ok()
}

/// The head of a record: everything but the type's own fields.
#[derive(Debug, Clone)]
pub struct Head<'a> {
    /// The log's origin.
    pub log: &'a str,
    /// The record's position in the log.
    pub seq: u64,
    /// The writer's start count.
    pub epoch: u64,
    /// When it was written.
    pub ts: SystemTime,
    /// The previous line's leaf hash (or the genesis hash).
    pub prev: Hash,
    /// The record's type, e.g. `request.decision`.
    pub kind: &'a str,
}

/// Write one record line, `\n` included, into `out`. Fields whose names are head keys are
/// refused rather than shadowing the head.
pub fn write_line(out: &mut Vec<u8>, head: &Head<'_>, fields: &Map<String, Value>) {
    let start = out.len();
    write_head(out, head);
    for (key, value) in fields {
        if is_head_key(key) {
            continue;
        }
        out.push(b',');
        push_str(out, key);
        out.push(b':');
        push_json(out, value);
    }
    out.extend_from_slice(b"}\n");
    debug_assert!(!out[start..out.len() - 1].contains(&b'\n'));
}

/// [`write_line`] with the type's fields already serialised: the same bytes as `write_line`
/// over the map the fields were made from (but for the random `id`).
pub fn write_fields_line(out: &mut Vec<u8>, head: &Head<'_>, fields: &Fields) {
    write_fields_bytes_line(out, head, fields.as_bytes());
}

/// [`write_fields_line`] with the bytes of a [`Fields`] (copied out of one, as the writer's
/// queue keeps them: they keep its guarantees).
pub(crate) fn write_fields_bytes_line(out: &mut Vec<u8>, head: &Head<'_>, fields: &[u8]) {
    let start = out.len();
    write_head(out, head);
    if !fields.is_empty() {
        out.push(b',');
        out.extend_from_slice(fields);
    }
    out.extend_from_slice(b"}\n");
    debug_assert!(!out[start..out.len() - 1].contains(&b'\n'));
}

/// The head, from `{` to the `type`'s value: `{"v":1,"log":…,"type":"…"`. Written straight
/// into `out` (no `format!`, no intermediate `String`): this runs once per record on the
/// writer's thread.
fn write_head(out: &mut Vec<u8>, head: &Head<'_>) {
    out.extend_from_slice(b"{\"v\":");
    push_u64(out, VERSION);
    out.extend_from_slice(b",\"log\":");
    push_str(out, head.log);
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, head.seq);
    out.extend_from_slice(b",\"epoch\":");
    push_u64(out, head.epoch);
    out.extend_from_slice(b",\"ts\":\"");
    push_ts(out, head.ts);
    out.extend_from_slice(b"\",\"prev\":\"");
    let mut prev = [0u8; 44];
    match BASE64.encode_slice(head.prev, &mut prev) {
        Ok(n) => out.extend_from_slice(&prev[..n]),
        Err(_) => out.extend_from_slice(encode_hash(&head.prev).as_bytes()),
    }
    out.extend_from_slice(b"\",\"id\":\"");
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(
        uuid::Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut id)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"type\":");
    push_str(out, head.kind);
}

fn is_head_key(key: &str) -> bool {
    HEAD_KEYS.contains(&key)
}

fn push_json(out: &mut Vec<u8>, value: &Value) {
    // Serialising a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A JSON string, escaped as `serde_json` escapes it (`"`, `\\` and control characters).
/// Text with nothing to escape, the usual case for keys, kinds and origins, is copied as is.
fn push_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Serialising a `str` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Decimal, as `u64`'s `Display` writes it.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// [`format_ts`] without allocating: the same bytes as `humantime::format_rfc3339_micros`
/// (whose algorithm this is), which it falls back to outside years 1970–9999.
fn push_ts(out: &mut Vec<u8>, at: SystemTime) {
    let Some(since) = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .filter(|d| d.as_secs() < 253_402_300_800)
    else {
        out.extend_from_slice(format_ts(at).as_bytes());
        return;
    };
    let secs = since.as_secs();
    let micros = since.subsec_micros();
    // Days since 2000-03-01 (the first day after a leap day of a 400-year cycle).
    const LEAPOCH: i64 = 11017;
    const DAYS_PER_400Y: i64 = 365 * 400 + 97;
    const DAYS_PER_100Y: i64 = 365 * 100 + 24;
    const DAYS_PER_4Y: i64 = 365 * 4 + 1;
    let days = (secs / 86400) as i64 - LEAPOCH;
    let secs_of_day = secs % 86400;
    let mut qc_cycles = days / DAYS_PER_400Y;
    let mut remdays = days % DAYS_PER_400Y;
    if remdays < 0 {
        remdays += DAYS_PER_400Y;
        qc_cycles -= 1;
    }
    let c_cycles = (remdays / DAYS_PER_100Y).min(3);
    remdays -= c_cycles * DAYS_PER_100Y;
    let q_cycles = (remdays / DAYS_PER_4Y).min(24);
    remdays -= q_cycles * DAYS_PER_4Y;
    let remyears = (remdays / 365).min(3);
    remdays -= remyears * 365;
    let mut year = 2000 + remyears + 4 * q_cycles + 100 * c_cycles + 400 * qc_cycles;
    // Months from March.
    const MONTHS: [i64; 12] = [31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 29];
    let mut mon = 0;
    for len in MONTHS {
        mon += 1;
        if remdays < len {
            break;
        }
        remdays -= len;
    }
    let mday = remdays + 1;
    let mon = if mon + 2 > 12 {
        year += 1;
        mon - 10
    } else {
        mon + 2
    };
    let digit = |n: u64| b'0' + (n % 10) as u8;
    let (year, mon, mday) = (year as u64, mon as u64, mday as u64);
    let (hour, min, sec) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let micros = u64::from(micros);
    out.extend_from_slice(&[
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(mon / 10),
        digit(mon),
        b'-',
        digit(mday / 10),
        digit(mday),
        b'T',
        digit(hour / 10),
        digit(hour),
        b':',
        digit(min / 10),
        digit(min),
        b':',
        digit(sec / 10),
        digit(sec),
        b'.',
        digit(micros / 100_000),
        digit(micros / 10_000),
        digit(micros / 1000),
        digit(micros / 100),
        digit(micros / 10),
        digit(micros),
        b'Z',
    ]);
}

/// A record's own fields, serialised on the caller's side: the members of a JSON object
/// without its braces (`"k":v,"k2":v2`, empty for none), in the order they were given, with
/// no member named like a head key (those are skipped, as [`write_line`] skips them).
///
/// Building it where the record is made (the request's task) keeps the serialisation and the
/// allocations off the writer's thread, which then only adds the head and hashes the line.
/// A line written from them is byte for byte the line `write_line` writes for the same fields
/// as a `Map` (same key order, same escaping, same number formatting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<u8>);

/// The most a thread's scratch buffer for [`Fields::from_serialize`] keeps between records
/// (a larger record's buffer is freed after it).
const SCRATCH_KEPT: usize = 16 * 1024;

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Fields(Vec::new())
    }

    /// Serialise anything that serialises as a JSON object: a `#[derive(Serialize)]` struct
    /// (borrowing its strings is enough: they are copied into the bytes here), a map, a
    /// `serde_json::Value::Object`. Members named like a head key are skipped. Fails if the
    /// value is not an object (or not a map with string, integer or boolean keys), or if its
    /// `Serialize` fails.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        // Serialised into this thread's scratch buffer, then copied at their exact size: a
        // record's fields are a few hundred bytes, an allocation the allocator's per-thread
        // cache serves, where a buffer sized for the largest record (1 KiB or more) takes its
        // slow path on every record. A `Serialize` that itself makes `Fields` gets a buffer
        // of its own.
        thread_local! {
            static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(SCRATCH_KEPT));
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                let fields = Self::serialize_into(&mut scratch, value);
                if scratch.capacity() > SCRATCH_KEPT {
                    *scratch = Vec::with_capacity(SCRATCH_KEPT);
                }
                fields
            }
            Err(_) => Self::serialize_into(&mut Vec::new(), value),
        })
    }

    fn serialize_into<T: Serialize + ?Sized>(
        out: &mut Vec<u8>,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        value.serialize(Object { out: &mut *out })?;
        // `serde_json` escapes every control character in strings and writes no whitespace,
        // but a `RawValue` (a pre-serialised part, such as the gateway's cached principal) is
        // spliced as it is: checked, as a raw line break would split the line. One branch-free
        // pass.
        if out.iter().fold(false, |seen, &b| seen | (b < 0x20)) {
            return Err(serde::ser::Error::custom(
                "a record's fields must not contain raw control characters",
            ));
        }
        Ok(Fields(out.as_slice().to_vec()))
    }

    /// The fields of a map (never fails).
    pub fn from_map(map: &Map<String, Value>) -> Self {
        let mut out = Vec::with_capacity(if map.is_empty() { 0 } else { 1024 });
        for (key, value) in map {
            if is_head_key(key) {
                continue;
            }
            if !out.is_empty() {
                out.push(b',');
            }
            push_str(&mut out, key);
            out.push(b':');
            push_json(&mut out, value);
        }
        Fields(out)
    }

    /// The serialised members, without braces.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&Map<String, Value>> for Fields {
    fn from(map: &Map<String, Value>) -> Self {
        Fields::from_map(map)
    }
}

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Self {
        Fields::from_map(&map)
    }
}

fn not_an_object() -> serde_json::Error {
    serde::ser::Error::custom("a record's fields must serialise as a JSON object")
}

/// The serializer of [`Fields::from_serialize`]: takes a struct or a map at the top and writes
/// its members; every value below is `serde_json`'s.
struct Object<'a> {
    out: &'a mut Vec<u8>,
}

/// The members being written (the struct or map of [`Object`]).
struct Members<'a> {
    out: &'a mut Vec<u8>,
    /// The last key was a head key: its value is skipped.
    skip_value: bool,
}

impl Members<'_> {
    /// Start a member: `,` unless it is the first, the key, `:`. False for a head key.
    fn key(&mut self, key: &str) -> bool {
        if is_head_key(key) {
            return false;
        }
        if !self.out.is_empty() {
            self.out.push(b',');
        }
        push_str(self.out, key);
        self.out.push(b':');
        true
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), serde_json::Error> {
        value.serialize(&mut serde_json::Serializer::new(&mut *self.out))
    }
}

impl SerializeStruct for Members<'_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        if self.key(key) {
            self.value(value)?;
        }
        Ok(())
    }

    fn end(self) -> Result<(), serde_json::Error> {
        Ok(())
    }
}

impl SerializeMap for Members<'_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), serde_json::Error> {
        self.skip_value = !key.serialize(MapKey { members: self })?;
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        if std::mem::take(&mut self.skip_value) {
            return Ok(());
        }
        self.value(value)
    }

    fn end(self) -> Result<(), serde_json::Error> {
        Ok(())
    }
}

/// A map's key, as `serde_json` accepts it: a string, or an integer, boolean or char written
/// as one. `Ok(false)` for a head key (the member is skipped).
struct MapKey<'a, 'b> {
    members: &'a mut Members<'b>,
}

impl MapKey<'_, '_> {
    fn integer(self, n: impl std::fmt::Display) -> Result<bool, serde_json::Error> {
        Ok(self.members.key(&n.to_string()))
    }
}

impl Serializer for MapKey<'_, '_> {
    type Ok = bool;
    type Error = serde_json::Error;
    type SerializeSeq = Impossible<bool, serde_json::Error>;
    type SerializeTuple = Impossible<bool, serde_json::Error>;
    type SerializeTupleStruct = Impossible<bool, serde_json::Error>;
    type SerializeTupleVariant = Impossible<bool, serde_json::Error>;
    type SerializeMap = Impossible<bool, serde_json::Error>;
    type SerializeStruct = Impossible<bool, serde_json::Error>;
    type SerializeStructVariant = Impossible<bool, serde_json::Error>;

    fn serialize_str(self, v: &str) -> Result<bool, serde_json::Error> {
        Ok(self.members.key(v))
    }
    fn serialize_char(self, v: char) -> Result<bool, serde_json::Error> {
        Ok(self.members.key(v.encode_utf8(&mut [0; 4])))
    }
    fn serialize_bool(self, v: bool) -> Result<bool, serde_json::Error> {
        Ok(self.members.key(if v { "true" } else { "false" }))
    }
    fn serialize_i8(self, v: i8) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_i16(self, v: i16) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_i32(self, v: i32) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_i64(self, v: i64) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_i128(self, v: i128) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_u8(self, v: u8) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_u16(self, v: u16) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_u32(self, v: u32) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_u64(self, v: u64) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_u128(self, v: u128) -> Result<bool, serde_json::Error> {
        self.integer(v)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<bool, serde_json::Error> {
        Ok(self.members.key(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<bool, serde_json::Error> {
        value.serialize(self)
    }
    fn serialize_f32(self, _v: f32) -> Result<bool, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_f64(self, _v: f64) -> Result<bool, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<bool, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_none(self) -> Result<bool, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<bool, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_unit(self) -> Result<bool, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<bool, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<bool, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, serde_json::Error> {
        Err(key_not_a_string())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, serde_json::Error> {
        Err(key_not_a_string())
    }
}

fn key_not_a_string() -> serde_json::Error {
    serde::ser::Error::custom("a record's field names must be strings")
}

impl<'a> Serializer for Object<'a> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Impossible<(), serde_json::Error>;
    type SerializeTuple = Impossible<(), serde_json::Error>;
    type SerializeTupleStruct = Impossible<(), serde_json::Error>;
    type SerializeTupleVariant = Impossible<(), serde_json::Error>;
    type SerializeMap = Members<'a>;
    type SerializeStruct = Members<'a>;
    type SerializeStructVariant = Impossible<(), serde_json::Error>;

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Members<'a>, serde_json::Error> {
        Ok(Members {
            out: self.out,
            skip_value: false,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Members<'a>, serde_json::Error> {
        Ok(Members {
            out: self.out,
            skip_value: false,
        })
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        value.serialize(self)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), serde_json::Error> {
        value.serialize(self)
    }
    fn serialize_bool(self, _v: bool) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_i8(self, _v: i8) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_i16(self, _v: i16) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_i32(self, _v: i32) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_i64(self, _v: i64) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_u8(self, _v: u8) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_u16(self, _v: u16) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_u32(self, _v: u32) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_u64(self, _v: u64) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_f32(self, _v: f32) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_f64(self, _v: f64) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_char(self, _v: char) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_str(self, _v: &str) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_none(self) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_unit(self) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, serde_json::Error> {
        Err(not_an_object())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, serde_json::Error> {
        Err(not_an_object())
    }
}

/// Why a stored line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    Json(String),
    /// A head key is missing, misplaced or of the wrong type.
    #[error("bad head: {0}")]
    Head(String),
}

/// A record read back from its stored bytes.
#[derive(Debug, Clone)]
pub struct Record {
    /// `v`.
    pub v: u64,
    /// `log`.
    pub log: String,
    /// `seq`.
    pub seq: u64,
    /// `epoch`.
    pub epoch: u64,
    /// `ts`, as written.
    pub ts: String,
    /// `prev`, decoded.
    pub prev: Hash,
    /// `id`.
    pub id: String,
    /// `type`.
    pub kind: String,
    /// The whole object, head included.
    pub fields: Map<String, Value>,
    /// `SHA-256(0x00 || line)`.
    pub leaf: Hash,
}

impl Record {
    /// Parse one line (without its `\n`). The head keys must come first, in order.
    pub fn parse(line: &[u8]) -> Result<Self, LineError> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| LineError::Json(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(LineError::Json("not an object".into()));
        };
        let keys: Vec<&str> = fields
            .keys()
            .take(HEAD_KEYS.len())
            .map(|k| k.as_str())
            .collect();
        if keys != HEAD_KEYS {
            return Err(LineError::Head(format!(
                "the first keys are {keys:?}, not {HEAD_KEYS:?}"
            )));
        }
        let int = |k: &str| {
            fields[k]
                .as_u64()
                .ok_or_else(|| LineError::Head(format!("`{k}` is not an unsigned integer")))
        };
        let text = |k: &str| {
            fields[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| LineError::Head(format!("`{k}` is not a string")))
        };
        let prev = decode_hash(&text("prev")?)
            .ok_or_else(|| LineError::Head("`prev` is not a base64 SHA-256".into()))?;
        Ok(Record {
            v: int("v")?,
            log: text("log")?,
            seq: int("seq")?,
            epoch: int("epoch")?,
            ts: text("ts")?,
            prev,
            id: text("id")?,
            kind: text("type")?,
            leaf: leaf_hash(line),
            fields,
        })
    }

    /// `ts` as a time, if it parses.
    pub fn time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.ts).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pre_serialised_part_is_spliced_as_is_unless_it_would_break_the_line() {
        #[derive(Serialize)]
        struct Decision<'a> {
            principal: &'a serde_json::value::RawValue,
        }
        let compact = serde_json::value::to_raw_value(&json!({"sub": "a", "roles": ["r"]}))
            .expect("a value serialises");
        let fields = Fields::from_serialize(&Decision {
            principal: &compact,
        })
        .expect("compact JSON is spliced");
        assert_eq!(
            fields.as_bytes(),
            br#""principal":{"sub":"a","roles":["r"]}"#
        );
        let broken = serde_json::value::RawValue::from_string("{\n\"sub\": \"a\"\n}".into())
            .expect("valid JSON with line breaks");
        let refused = Fields::from_serialize(&Decision { principal: &broken });
        assert!(refused.is_err(), "{refused:?}");
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = [
            "",
            "request.decision",
            "test.example/log",
            "quote \" inside",
            "back\\slash",
            "line\nbreak\tand\rcontrols\u{0}\u{1f}",
            "del \u{7f} and non-ASCII: é, 漢字, 🦀",
            "</script>",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every single character below 0x80, alone and inside text.
        cases.extend((0u8..0x80).map(|b| format!("a{}b", b as char)));
        for text in cases {
            let mut ours = Vec::new();
            push_str(&mut ours, &text);
            let theirs = serde_json::to_vec(&text).expect("a string serialises");
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    fn line(fields: Value) -> Vec<u8> {
        let mut out = Vec::new();
        let Value::Object(map) = fields else {
            panic!("fields must be an object")
        };
        write_line(
            &mut out,
            &Head {
                log: "test.example/log",
                seq: 7,
                epoch: 2,
                ts: SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_micros(1_700_000_000_123_456),
                prev: genesis("test.example/log"),
                kind: "request.decision",
            },
            &map,
        );
        out
    }

    #[test]
    fn a_written_line_reads_back_with_its_head_and_fields() {
        let out = line(json!({"route": "blob", "seq": 99, "n": {"a": [1, 2]}}));
        assert_eq!(out.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&out).expect("utf-8");
        assert!(
            text.starts_with(
                "{\"v\":1,\"log\":\"test.example/log\",\"seq\":7,\"epoch\":2,\"ts\":\"2023-11-14T22:13:20.123456Z\",\"prev\":\""
            ),
            "{text}"
        );
        let record = Record::parse(&out[..out.len() - 1]).expect("parses");
        assert_eq!(
            record.seq, 7,
            "a field named like a head key never shadows it"
        );
        assert_eq!(record.kind, "request.decision");
        assert_eq!(record.fields["route"], "blob");
        assert_eq!(record.prev, genesis("test.example/log"));
        assert_eq!(record.leaf, leaf_hash(&out[..out.len() - 1]));
    }

    #[test]
    fn a_line_with_reordered_head_keys_is_refused() {
        let out = br#"{"log":"x","v":1,"seq":0,"epoch":1,"ts":"t","prev":"","id":"i","type":"t"}"#;
        assert!(matches!(Record::parse(out), Err(LineError::Head(_))));
    }

    /// `line` with its random `id` blanked, to compare two writes of one record.
    fn without_id(line: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(line).expect("utf-8");
        let at = text.find("\"id\":\"").expect("an id") + 6;
        [&line[..at], &line[at + 36..]].concat()
    }

    fn head() -> Head<'static> {
        Head {
            log: "test.example/\"log\"\u{e9}",
            seq: u64::MAX,
            epoch: 0,
            ts: SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789),
            prev: genesis("x"),
            kind: "request.decision\n",
        }
    }

    #[test]
    fn the_head_is_written_as_format_would_write_it() {
        let head = head();
        let mut out = Vec::new();
        write_line(&mut out, &head, &Map::new());
        let record = Record::parse(&out[..out.len() - 1]).expect("parses");
        let expected = format!(
            "{{\"v\":1,\"log\":{},\"seq\":{},\"epoch\":{},\"ts\":\"{}\",\"prev\":\"{}\",\"id\":\"{}\",\"type\":{}}}\n",
            serde_json::to_string(head.log).expect("json"),
            head.seq,
            head.epoch,
            format_ts(head.ts),
            encode_hash(&head.prev),
            record.id,
            serde_json::to_string(head.kind).expect("json"),
        );
        assert_eq!(String::from_utf8(out).expect("utf-8"), expected);
        assert_eq!(
            uuid::Uuid::parse_str(&record.id).map(|u| u.get_version_num()),
            Ok(4)
        );
    }

    #[test]
    fn timestamps_are_written_as_humantime_writes_them() {
        let mut at: Vec<u64> = vec![
            0,
            1,
            86_399_999_999,
            951_782_400_000_000,     // 2000-02-29
            951_868_800_000_000,     // 2000-03-01
            4_107_542_400_000_000,   // 2100-02-28
            4_107_628_800_000_000,   // 2100-03-01
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            at.push(x % 253_402_300_800_000_000);
        }
        for micros in at {
            for nanos in [0, 999] {
                let t = SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_micros(micros)
                    + std::time::Duration::from_nanos(nanos);
                let mut out = Vec::new();
                push_ts(&mut out, t);
                assert_eq!(
                    String::from_utf8(out).expect("utf-8"),
                    format_ts(t),
                    "{micros}"
                );
            }
        }
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX / 3, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[derive(serde::Serialize)]
    struct Source<'a> {
        addr: &'a str,
        tls: bool,
    }

    #[derive(serde::Serialize)]
    struct Decision<'a> {
        request_id: &'a str,
        #[serde(rename = "ro\"ute\u{2028}")]
        route: &'a str,
        source: Source<'a>,
        roles: &'a [&'a str],
        error: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        seq: u64,
        latency: f64,
        #[serde(flatten)]
        extra: std::collections::BTreeMap<&'a str, u32>,
    }

    #[test]
    fn fields_from_a_struct_are_the_bytes_of_the_same_map() {
        let decision = Decision {
            request_id: "r-1",
            route: "blob\"\\\u{1}",
            source: Source {
                addr: "10.0.0.1:4000",
                tls: true,
            },
            roles: &["a", "b"],
            error: None,
            skipped: None,
            seq: 99,
            latency: 1.5,
            extra: [("zeta", 1), ("type", 2), ("alpha", 3)]
                .into_iter()
                .collect(),
        };
        let fields = Fields::from_serialize(&decision).expect("serialises");
        let Value::Object(map) = serde_json::to_value(&decision).expect("a value") else {
            panic!("an object")
        };
        assert_eq!(fields, Fields::from_map(&map));
        assert_eq!(
            fields,
            Fields::from_serialize(&Value::Object(map.clone())).expect("a map")
        );
        let text = std::str::from_utf8(fields.as_bytes()).expect("utf-8");
        assert!(
            !text.contains("\"seq\"") && !text.contains("\"type\""),
            "{text}"
        );
        assert!(
            text.starts_with("\"request_id\":\"r-1\",\"ro\\\"ute"),
            "{text}"
        );
        let head = head();
        let (mut by_map, mut by_fields) = (Vec::new(), Vec::new());
        write_line(&mut by_map, &head, &map);
        write_fields_line(&mut by_fields, &head, &fields);
        assert_eq!(without_id(&by_map), without_id(&by_fields));
        let record = Record::parse(&by_fields[..by_fields.len() - 1]).expect("parses");
        assert_eq!(
            record.seq,
            u64::MAX,
            "a field named like a head key never shadows it"
        );
        assert_eq!(record.fields["alpha"], 3);
        assert_eq!(record.fields["source"]["addr"], "10.0.0.1:4000");
    }

    #[test]
    fn fields_are_their_own_bytes_whatever_was_serialised_before_or_inside() {
        // A value whose serialisation makes `Fields` of its own (the thread's scratch buffer
        // is in use then).
        struct Nested(u64);
        impl Serialize for Nested {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let inner = Fields::from_serialize(&json!({"n": self.0}))
                    .map_err(serde::ser::Error::custom)?;
                serializer.serialize_str(std::str::from_utf8(inner.as_bytes()).unwrap_or(""))
            }
        }
        let nested =
            Fields::from_serialize(&json!({"outer": 1, "inner": Nested(7)})).expect("fields");
        assert_eq!(nested.as_bytes(), br#""outer":1,"inner":"\"n\":7""#);
        // A record larger than the scratch buffer keeps, then a small one: no bytes carried
        // over, and each exactly its size.
        let big = "x".repeat(SCRATCH_KEPT * 2);
        let large = Fields::from_serialize(&json!({"big": big})).expect("fields");
        assert_eq!(large.as_bytes().len(), big.len() + r#""big":"""#.len());
        let small = Fields::from_serialize(&json!({"a": 1})).expect("fields");
        assert_eq!(small.as_bytes(), br#""a":1"#);
        assert_eq!(
            small.0.capacity(),
            small.0.len(),
            "copied at its exact size"
        );
    }

    #[test]
    fn fields_that_are_not_an_object_are_refused() {
        assert!(Fields::from_serialize(&1).is_err());
        assert!(Fields::from_serialize("text").is_err());
        assert!(Fields::from_serialize(&[1, 2]).is_err());
        assert!(Fields::from_serialize(&Value::Null).is_err());
        let int_keys: std::collections::BTreeMap<u8, u8> = [(1, 2)].into_iter().collect();
        assert_eq!(
            Fields::from_serialize(&int_keys)
                .map(|f| f.as_bytes().to_vec())
                .ok(),
            Some(b"\"1\":2".to_vec()),
            "integer keys are written as strings, as serde_json writes them"
        );
        assert!(Fields::from_serialize(&Some(json!({"a": 1}))).is_ok());
        let empty = Fields::from_serialize(&json!({"v": 2, "log": "x"})).expect("an object");
        assert!(empty.is_empty());
        let mut out = Vec::new();
        write_fields_line(&mut out, &head(), &empty);
        assert!(Record::parse(&out[..out.len() - 1]).is_ok());
    }

    #[test]
    fn genesis_depends_on_the_origin() {
        assert_ne!(genesis("a"), genesis("b"));
    }
}
