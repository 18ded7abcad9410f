//! The manifest's JSON form (agent-api.md §2.2), read and written exactly as
//! Go's `encoding/json` reads and writes the Go agent's `agent.Computation`,
//! so that `cocos-cli checksum --manifest` — SHA3-256 of the re-marshalled
//! JSON — equals the Go CLI's, and the JSON that the agent extends into
//! PCR16 is byte-identical.
//!
//! # Writing (Go's `json.Marshal`)
//!
//! - Fields in struct order, no whitespace, no trailing newline.
//! - `omitempty`: empty strings, `false`, empty lists and absent objects are
//!   left out. `hash` is a Go `[32]byte`, which is never empty: it is always
//!   written, as an array of 32 integers. Byte slices (`user_key`) are
//!   standard base64 with padding.
//! - Strings: `"` and `\` escaped; `\n`, `\r`, `\t`, `\b`, `\f` as such (Go ≥
//!   1.22; older Go writes `\u0008`, `\u000c`); other control characters as
//!   `\u00xx`; `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026` (HTML escaping);
//!   U+2028 and U+2029 as `\u2028`, `\u2029`.
//! - Ours: `algorithm.requirements_hash`, written after `kbs` as an array of
//!   32 integers only when present (Go: `*[32]byte` with `omitempty`). The
//!   Go agent's struct has no such field and drops it, so a manifest that
//!   declares requirements has a different checksum under the Go CLI.
//!
//! # Reading (Go's `json.Unmarshal`)
//!
//! - Keys match field names case-insensitively (ASCII, plus U+017F and
//!   U+212A, which Unicode folds to `s` and `k`), unknown keys are ignored,
//!   and `null` leaves a field at its zero value.
//! - `hash` takes the first 32 elements of an array, zero-filling a shorter
//!   one; we record how many were given so that validation can name a
//!   wrong length.
//! - Byte slices take standard base64 (padding required, `\r` and `\n`
//!   ignored, non-zero trailing bits accepted) or an array of integers.
//!
//! Where Go would accept input with a result that depends on its version or
//! is surely a mistake, we refuse instead (documented in decisions.md): a
//! key repeated within one object (Go merges the values), strings with
//! invalid UTF-8 or unpaired surrogate escapes (Go substitutes U+FFFD).

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Go's `base64.StdEncoding` when decoding: padded, lenient trailing bits.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// A Go `[32]byte` field: 32 bytes, and how many the JSON gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashField {
    /// The value Go holds: the given elements, zero-filled to 32.
    pub bytes: [u8; 32],
    /// Elements given: `None` when the key was absent or `null`.
    pub given: Option<usize>,
}

impl HashField {
    /// A hash given in full.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self {
            bytes,
            given: Some(32),
        }
    }

    /// A hash from wire bytes of any length: Go's conversion copies the
    /// first 32 and zero-fills; the length is kept for validation.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut out = [0u8; 32];
        let n = bytes.len().min(32);
        out[..n].copy_from_slice(&bytes[..n]);
        Self {
            bytes: out,
            given: Some(bytes.len()),
        }
    }
}

/// `agent.ResourceSource`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// `type`.
    pub r#type: String,
    /// `url`.
    pub url: String,
    /// `kbs_resource_path`.
    pub kbs_resource_path: String,
    /// `encrypted`.
    pub encrypted: bool,
}

/// `agent.KBSConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kbs {
    /// `url`.
    pub url: String,
    /// `enabled`.
    pub enabled: bool,
}

/// `agent.Dataset`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dataset {
    /// `hash`.
    pub hash: HashField,
    /// `user_key`: DER SubjectPublicKeyInfo.
    pub user_key: Vec<u8>,
    /// `filename`.
    pub filename: String,
    /// `source`.
    pub source: Option<Source>,
    /// `decompress`.
    pub decompress: bool,
    /// `kbs`.
    pub kbs: Option<Kbs>,
}

/// `agent.Algorithm`, plus `requirements_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Algorithm {
    /// `hash`.
    pub hash: HashField,
    /// `user_key`: DER SubjectPublicKeyInfo.
    pub user_key: Vec<u8>,
    /// `source`.
    pub source: Option<Source>,
    /// `algo_type`.
    pub algo_type: String,
    /// `algo_args`.
    pub algo_args: Vec<String>,
    /// `kbs`.
    pub kbs: Option<Kbs>,
    /// `requirements_hash` (ours): `None` when absent.
    pub requirements_hash: Option<HashField>,
}

/// `agent.ResultConsumer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResultConsumer {
    /// `user_key`: DER SubjectPublicKeyInfo.
    pub user_key: Vec<u8>,
}

/// `agent.Computation`: the manifest as its JSON form holds it, before
/// validation. Round-trips through [`Computation::from_json`] and
/// [`Computation::to_json`] as through Go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Computation {
    /// `id`.
    pub id: String,
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: String,
    /// `datasets`.
    pub datasets: Vec<Dataset>,
    /// `algorithm`.
    pub algorithm: Option<Algorithm>,
    /// `result_consumers`.
    pub result_consumers: Vec<ResultConsumer>,
}

/// Why JSON could not be read as a manifest.
#[derive(Debug, thiserror::Error)]
#[error("manifest JSON: {0}")]
pub struct JsonError(#[from] serde_json::Error);

impl Computation {
    /// Reads the JSON form as Go's `json.Unmarshal` does (see the module
    /// documentation for the rules and where we are stricter).
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let c = Go(Kind::Computation).deserialize(&mut de)?;
        de.end()?;
        match c {
            Value::Computation(c) => Ok(c),
            // Each seed returns the variant of its kind.
            _ => Err(JsonError(de::Error::custom("not a computation object"))),
        }
    }

    /// The JSON Go's `json.Marshal` writes for this value.
    pub fn to_json(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.computation(self);
        w.out
    }
}

// ---------------------------------------------------------------- writing

#[derive(Default)]
struct Writer {
    out: Vec<u8>,
    /// Whether the current object has a field yet (a stack, one per object).
    first: Vec<bool>,
}

impl Writer {
    fn open(&mut self) {
        self.out.push(b'{');
        self.first.push(true);
    }

    fn close(&mut self) {
        self.out.push(b'}');
        self.first.pop();
    }

    fn key(&mut self, name: &str) {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push(b',');
            }
            *first = false;
        }
        self.string(name);
        self.out.push(b':');
    }

    fn string(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.out.push(b'"');
        for c in s.chars() {
            match c {
                '"' => self.out.extend_from_slice(b"\\\""),
                '\\' => self.out.extend_from_slice(b"\\\\"),
                '\n' => self.out.extend_from_slice(b"\\n"),
                '\r' => self.out.extend_from_slice(b"\\r"),
                '\t' => self.out.extend_from_slice(b"\\t"),
                '\u{8}' => self.out.extend_from_slice(b"\\b"),
                '\u{c}' => self.out.extend_from_slice(b"\\f"),
                '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                    let b = c as u32 as u8;
                    self.out.extend_from_slice(b"\\u00");
                    self.out.push(HEX[usize::from(b >> 4)]);
                    self.out.push(HEX[usize::from(b & 0xf)]);
                }
                '\u{2028}' => self.out.extend_from_slice(b"\\u2028"),
                '\u{2029}' => self.out.extend_from_slice(b"\\u2029"),
                _ => {
                    let mut buf = [0u8; 4];
                    self.out
                        .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        self.out.push(b'"');
    }

    fn str_field(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.key(name);
            self.string(value);
        }
    }

    fn bool_field(&mut self, name: &str, value: bool) {
        if value {
            self.key(name);
            self.out.extend_from_slice(b"true");
        }
    }

    fn bytes_field(&mut self, name: &str, value: &[u8]) {
        if !value.is_empty() {
            self.key(name);
            self.out.push(b'"');
            self.out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(value)
                    .as_bytes(),
            );
            self.out.push(b'"');
        }
    }

    fn hash_field(&mut self, name: &str, value: &[u8; 32]) {
        self.key(name);
        self.out.push(b'[');
        for (i, b) in value.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(b.to_string().as_bytes());
        }
        self.out.push(b']');
    }

    fn source(&mut self, s: &Option<Source>) {
        if let Some(s) = s {
            self.key("source");
            self.open();
            self.str_field("type", &s.r#type);
            self.str_field("url", &s.url);
            self.str_field("kbs_resource_path", &s.kbs_resource_path);
            self.bool_field("encrypted", s.encrypted);
            self.close();
        }
    }

    fn kbs(&mut self, k: &Option<Kbs>) {
        if let Some(k) = k {
            self.key("kbs");
            self.open();
            self.str_field("url", &k.url);
            self.bool_field("enabled", k.enabled);
            self.close();
        }
    }

    fn computation(&mut self, c: &Computation) {
        self.open();
        self.str_field("id", &c.id);
        self.str_field("name", &c.name);
        self.str_field("description", &c.description);
        if !c.datasets.is_empty() {
            self.key("datasets");
            self.out.push(b'[');
            for (i, d) in c.datasets.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.open();
                self.hash_field("hash", &d.hash.bytes);
                self.bytes_field("user_key", &d.user_key);
                self.str_field("filename", &d.filename);
                self.source(&d.source);
                self.bool_field("decompress", d.decompress);
                self.kbs(&d.kbs);
                self.close();
            }
            self.out.push(b']');
        }
        if let Some(a) = &c.algorithm {
            self.key("algorithm");
            self.open();
            self.hash_field("hash", &a.hash.bytes);
            self.bytes_field("user_key", &a.user_key);
            self.source(&a.source);
            self.str_field("algo_type", &a.algo_type);
            if !a.algo_args.is_empty() {
                self.key("algo_args");
                self.out.push(b'[');
                for (i, arg) in a.algo_args.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.string(arg);
                }
                self.out.push(b']');
            }
            self.kbs(&a.kbs);
            if let Some(r) = &a.requirements_hash {
                self.hash_field("requirements_hash", &r.bytes);
            }
            self.close();
        }
        if !c.result_consumers.is_empty() {
            self.key("result_consumers");
            self.out.push(b'[');
            for (i, r) in c.result_consumers.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.open();
                self.bytes_field("user_key", &r.user_key);
                self.close();
            }
            self.out.push(b']');
        }
        self.close();
    }
}

// ---------------------------------------------------------------- reading

/// What a [`Go`] seed reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Computation,
    Dataset,
    Algorithm,
    Consumer,
    Source,
    Kbs,
    Hash,
    Bytes,
    Str,
    Bool,
    Datasets,
    Consumers,
    Strings,
}

enum Value {
    Computation(Computation),
    Dataset(Dataset),
    Algorithm(Option<Algorithm>),
    Consumer(ResultConsumer),
    Source(Option<Source>),
    Kbs(Option<Kbs>),
    Hash(HashField),
    Bytes(Vec<u8>),
    Str(String),
    Bool(bool),
    Datasets(Vec<Dataset>),
    Consumers(Vec<ResultConsumer>),
    Strings(Vec<String>),
}

/// A seed that reads one Go-typed value.
#[derive(Clone, Copy)]
struct Go(Kind);

impl<'de> DeserializeSeed<'de> for Go {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// Go's case folding for key matching: ASCII case, and the two non-ASCII
/// characters whose simple fold is an ASCII letter (U+017F ſ → s,
/// U+212A Kelvin sign → k).
fn fold_eq(key: &str, name: &str) -> bool {
    let mut k = key.chars().map(|c| match c {
        '\u{17f}' => 's',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    });
    let mut n = name.chars();
    loop {
        match (k.next(), n.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The fields of each object kind, in Go struct order, with their kinds.
fn fields(kind: Kind) -> &'static [(&'static str, Kind)] {
    match kind {
        Kind::Computation => &[
            ("id", Kind::Str),
            ("name", Kind::Str),
            ("description", Kind::Str),
            ("datasets", Kind::Datasets),
            ("algorithm", Kind::Algorithm),
            ("result_consumers", Kind::Consumers),
        ],
        Kind::Dataset => &[
            ("hash", Kind::Hash),
            ("user_key", Kind::Bytes),
            ("filename", Kind::Str),
            ("source", Kind::Source),
            ("decompress", Kind::Bool),
            ("kbs", Kind::Kbs),
        ],
        Kind::Algorithm => &[
            ("hash", Kind::Hash),
            ("user_key", Kind::Bytes),
            ("source", Kind::Source),
            ("algo_type", Kind::Str),
            ("algo_args", Kind::Strings),
            ("kbs", Kind::Kbs),
            ("requirements_hash", Kind::Hash),
        ],
        Kind::Consumer => &[("user_key", Kind::Bytes)],
        Kind::Source => &[
            ("type", Kind::Str),
            ("url", Kind::Str),
            ("kbs_resource_path", Kind::Str),
            ("encrypted", Kind::Bool),
        ],
        Kind::Kbs => &[("url", Kind::Str), ("enabled", Kind::Bool)],
        _ => &[],
    }
}

fn is_object(kind: Kind) -> bool {
    !fields(kind).is_empty()
}

/// The zero value Go leaves for `null`.
fn zero(kind: Kind) -> Value {
    match kind {
        Kind::Computation => Value::Computation(Computation::default()),
        Kind::Dataset => Value::Dataset(Dataset::default()),
        Kind::Algorithm => Value::Algorithm(None),
        Kind::Consumer => Value::Consumer(ResultConsumer::default()),
        Kind::Source => Value::Source(None),
        Kind::Kbs => Value::Kbs(None),
        Kind::Hash => Value::Hash(HashField::default()),
        Kind::Bytes => Value::Bytes(Vec::new()),
        Kind::Str => Value::Str(String::new()),
        Kind::Bool => Value::Bool(false),
        Kind::Datasets => Value::Datasets(Vec::new()),
        Kind::Consumers => Value::Consumers(Vec::new()),
        Kind::Strings => Value::Strings(Vec::new()),
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Hash => "an array of 32 byte values",
        Kind::Bytes => "a base64 string",
        Kind::Str => "a string",
        Kind::Bool => "true or false",
        Kind::Datasets | Kind::Consumers | Kind::Strings => "an array",
        _ => "an object",
    }
}

impl<'de> Visitor<'de> for Go {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(expected(self.0))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(zero(self.0))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        match self.0 {
            Kind::Bool => Ok(Value::Bool(v)),
            _ => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        match self.0 {
            Kind::Str => Ok(Value::Str(v.to_string())),
            Kind::Bytes => {
                let clean: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
                GO_STD
                    .decode(clean)
                    .map(Value::Bytes)
                    .map_err(|e| E::custom(format!("invalid base64: {e}")))
            }
            _ => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        match self.0 {
            Kind::Hash => {
                let mut h = HashField::default();
                let mut n = 0usize;
                while let Some(b) = seq.next_element_seed(ByteSeed)? {
                    if n < 32 {
                        h.bytes[n] = b;
                    }
                    n += 1;
                }
                h.given = Some(n);
                Ok(Value::Hash(h))
            }
            Kind::Bytes => {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element_seed(ByteSeed)? {
                    v.push(b);
                }
                Ok(Value::Bytes(v))
            }
            Kind::Datasets => {
                let mut v = Vec::new();
                while let Some(Value::Dataset(d)) = seq.next_element_seed(Go(Kind::Dataset))? {
                    v.push(d);
                }
                Ok(Value::Datasets(v))
            }
            Kind::Consumers => {
                let mut v = Vec::new();
                while let Some(Value::Consumer(c)) = seq.next_element_seed(Go(Kind::Consumer))? {
                    v.push(c);
                }
                Ok(Value::Consumers(v))
            }
            Kind::Strings => {
                let mut v = Vec::new();
                while let Some(Value::Str(s)) = seq.next_element_seed(Go(Kind::Str))? {
                    v.push(s);
                }
                Ok(Value::Strings(v))
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Seq, &self)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if !is_object(self.0) {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        let fields = fields(self.0);
        let mut values: Vec<Option<Value>> = fields.iter().map(|_| None).collect();
        while let Some(key) = map.next_key::<String>()? {
            match fields.iter().position(|(name, _)| fold_eq(&key, name)) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(i) => {
                    if values[i].is_some() {
                        return Err(de::Error::custom(format!(
                            "key {key:?} repeats field {:?} (refused: Go would merge the values)",
                            fields[i].0
                        )));
                    }
                    values[i] = Some(map.next_value_seed(Go(fields[i].1))?);
                }
            }
        }
        let mut it = values
            .into_iter()
            .zip(fields)
            .map(|(v, (_, kind))| v.unwrap_or_else(|| zero(*kind)));
        let mut next = || it.next().unwrap_or(Value::Bool(false));
        Ok(match self.0 {
            Kind::Computation => Value::Computation(Computation {
                id: string(next()),
                name: string(next()),
                description: string(next()),
                datasets: match next() {
                    Value::Datasets(v) => v,
                    _ => Vec::new(),
                },
                algorithm: match next() {
                    Value::Algorithm(a) => a,
                    _ => None,
                },
                result_consumers: match next() {
                    Value::Consumers(v) => v,
                    _ => Vec::new(),
                },
            }),
            Kind::Dataset => Value::Dataset(Dataset {
                hash: hash(next()),
                user_key: bytes(next()),
                filename: string(next()),
                source: source(next()),
                decompress: boolean(next()),
                kbs: kbs(next()),
            }),
            Kind::Algorithm => Value::Algorithm(Some(Algorithm {
                hash: hash(next()),
                user_key: bytes(next()),
                source: source(next()),
                algo_type: string(next()),
                algo_args: match next() {
                    Value::Strings(v) => v,
                    _ => Vec::new(),
                },
                kbs: kbs(next()),
                requirements_hash: Some(hash(next())).filter(|h| h.given.is_some()),
            })),
            Kind::Consumer => Value::Consumer(ResultConsumer {
                user_key: bytes(next()),
            }),
            Kind::Source => Value::Source(Some(Source {
                r#type: string(next()),
                url: string(next()),
                kbs_resource_path: string(next()),
                encrypted: boolean(next()),
            })),
            Kind::Kbs => Value::Kbs(Some(Kbs {
                url: string(next()),
                enabled: boolean(next()),
            })),
            _ => return Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Err(E::invalid_type(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Err(E::invalid_type(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Err(E::invalid_type(de::Unexpected::Float(v), &self))
    }
}

fn string(v: Value) -> String {
    match v {
        Value::Str(s) => s,
        _ => String::new(),
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => b,
        _ => Vec::new(),
    }
}

fn boolean(v: Value) -> bool {
    matches!(v, Value::Bool(true))
}

fn hash(v: Value) -> HashField {
    match v {
        Value::Hash(h) => h,
        _ => HashField::default(),
    }
}

fn source(v: Value) -> Option<Source> {
    match v {
        Value::Source(s) => s,
        _ => None,
    }
}

fn kbs(v: Value) -> Option<Kbs> {
    match v {
        Value::Kbs(k) => k,
        _ => None,
    }
}

/// One element of a byte array: a JSON integer 0..=255 (Go's
/// `strconv.ParseUint` refuses `1.0`, `1e2` and `-0`, which serde_json
/// reports as floats), or `null`, which leaves it 0.
struct ByteSeed;

impl<'de> DeserializeSeed<'de> for ByteSeed {
    type Value = u8;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u8, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ByteSeed {
    type Value = u8;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer from 0 to 255")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u8, E> {
        u8::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_unit<E: de::Error>(self) -> Result<u8, E> {
        Ok(0)
    }
}
