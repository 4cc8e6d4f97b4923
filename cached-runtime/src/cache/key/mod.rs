//! Key encoding: the key layout, the encoding of one argument, and the prefix and template
//! rules (one `const fn` each, which the macro's expansion evaluates at compile time).
//!
//! # Layout
//!
//! ```text
//! {namespace}{prefix}:{arguments}                      version 0, not generic
//! {namespace}{prefix}:={version}:{arguments}           version ≥ 1
//! {namespace}{prefix}:={version}.{types}:{arguments}   generic (see below)
//! ```
//!
//! - `namespace` is the cache's ([`CacheBuilder::namespace`](crate::CacheBuilder::namespace)),
//!   `prefix` the function's; a prefix holds no `:` ([`prefix_error`]), so the first `:` after
//!   the namespace ends it, and `{namespace}{prefix}:*` matches every entry of the prefix, of
//!   every version: [`Cache::invalidate_prefix`](crate::Cache::invalidate_prefix) covers them
//!   all.
//! - The version segment starts with `=`, which no encoded argument and no template text can
//!   start with, so a versioned key never equals an unversioned one. Two binaries with
//!   different `version`s (a rolling deploy) keep apart entries and each hits its own; the
//!   version in the stored value's header stays as a backstop.
//! - `types` is 16 lowercase hex digits of the 64-bit FNV-1a hash of the
//!   [`std::any::type_name`]s of a generic function's type parameters (joined by `,`): one
//!   instantiation never reads another's entries. `type_name` is not promised to be stable
//!   across compiler releases: after a toolchain upgrade the entries of generic functions may
//!   be missed once (never misread: the value still has to decode into the type).
//! - `arguments` is the key arguments' encodings joined by `:`, in signature order, or laid
//!   into the `key = "…"` template, whose rules ([`template_error`]) keep it unambiguous.
//!
//! # One argument
//!
//! One argument is encoded from its [`serde::Serialize`] impl:
//!
//! | value | encoding | example |
//! |---|---|---|
//! | integer | decimal | `42`, `-7` |
//! | float | shortest round-trip decimal | `1.5`, `-0`, `inf`, `NaN` |
//! | bool | `true` / `false` | |
//! | string, char | the UTF-8 text, with reserved bytes percent-encoded | `café`, `a%3Ab` |
//! | bytes | every byte outside `[A-Za-z0-9_.-]` percent-encoded | `%00%FF` |
//! | `None`, `()`, unit struct | `~` | |
//! | `Some(x)` | `x`, or `!x` when `x` itself starts with `~` or `!` | `5`, `!~` |
//! | sequence, tuple, tuple struct | `(a,b,c)` | `(1,2)` |
//! | struct, struct variant | `(field=value,…)` in declaration order, variant name before | `(page=2,lang=en)` |
//! | map | `(k=v,…)` sorted by encoded key, so `HashMap` order does not matter | |
//! | enum unit variant | its name | `Red` |
//! | newtype struct | the inner value | |
//! | newtype variant | `Name(value)` | `Id(7)` |
//!
//! Reserved bytes in strings: ASCII control characters, space, and
//! `% : , ( ) = ~ ! # * ? [ ] \ { } "`. They are written as `%XX` (uppercase hex); non-ASCII
//! text is kept as UTF-8. Because every delimiter is escaped inside strings, the encoding of a
//! value of a given type is unambiguous: two different values of one type never share an
//! encoding, and no encoding contains `:`. Values of different types may coincide (`42` and
//! `"42"`), which is why every cached function has its own prefix.
//!
//! An argument whose encoding is longer than [`MAX_ARG_LEN`] bytes is replaced by `#` and the
//! first 32 lowercase hex digits (128 bits) of the SHA-256 of its encoding, so keys stay
//! bounded and an argument from untrusted input cannot be crafted to collide with another.
//!
//! # Redis Cluster
//!
//! A key's hash slot depends on the key alone. No key holds `{` or `}` (strings escape them,
//! prefixes and template text cannot have them, and a namespace with them is rejected), so
//! there is no hash tag and every key hashes as a whole: the entries of a prefix spread over
//! every shard. The fill lock of an entry, [`Key::lock_key`], is
//! `{namespace}{{key}}#lock`: its hash tag is the entry's whole key, so it lives in the
//! entry's slot.
//!
//! # Stability
//!
//! The encoding uses no `std::hash`, no `Debug` output and no addresses: for the same argument
//! values it is the same in every process and on every machine, and this crate changes it only
//! in a release that says so. What it cannot promise is what it does not control: a type's
//! `Serialize` impl (a renamed field or variant changes the key), and `type_name` (above).
//!
//! Sets are encoded in iteration order: key on a `BTreeSet`, not a `HashSet`.

use std::fmt::{self, Write as _};

use serde::ser::{self, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CacheError;

/// Encoded arguments longer than this many bytes are replaced by a 33-byte hash form.
pub const MAX_ARG_LEN: usize = 96;

/// Why `prefix` cannot be a key prefix, or `None` when it can. The one definition of the rule:
/// the macro checks every `prefix = "…"` with it at compile time.
///
/// A prefix is non-empty and uses only ASCII letters, digits and `_ - . /`: no `:` (it would
/// let one prefix's keys pass for another's), no glob characters (prefix invalidation would
/// match too much), no `{}` (Redis Cluster hash tags), no whitespace.
pub const fn prefix_error(prefix: &str) -> Option<&'static str> {
    let bytes = prefix.as_bytes();
    if bytes.is_empty() {
        return Some(
            "`prefix` must not be empty: it keeps this function's keys apart from every other function's",
        );
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/')) {
            return Some(match b {
                b':' => {
                    "`prefix` may only use ASCII letters, digits and `_ - . /`: `:` separates the prefix from the arguments"
                }
                b'*' | b'?' | b'[' | b']' | b'\\' => {
                    "`prefix` may only use ASCII letters, digits and `_ - . /`: a glob character would make prefix invalidation match other keys"
                }
                _ => "`prefix` may only use ASCII letters, digits and `_ - . /`",
            });
        }
        i += 1;
    }
    None
}

/// Checks a prefix, for code that builds prefixes at run time.
pub fn validate_prefix(prefix: &str) -> Result<(), CacheError> {
    match prefix_error(prefix) {
        None => Ok(()),
        Some(_) => Err(CacheError::InvalidPrefix(prefix.to_owned())),
    }
}

/// Why `template` cannot be a `key = "…"` template, or `None` when it can. The one definition
/// of the rule; the macro checks every template with it at compile time.
///
/// A template is text with `{placeholder}`s. Its text may use no reserved byte (see the module
/// docs) but `:`, and two placeholders always have a `:` between them. Encoded values never
/// contain `:`, so every `:`-separated segment of a key holds at most one value between fixed
/// text: two different argument values never give one key (`{a}-{b}` would: `("x-y", "z")`
/// and `("x", "y-z")` both give `x-y-z`).
pub const fn template_error(template: &str) -> Option<&'static str> {
    let bytes = template.as_bytes();
    if bytes.is_empty() {
        return Some(
            "empty key template: name the arguments the key is made of, like `key = \"{id}\"`, or use `skip_all`",
        );
    }
    let mut i = 0;
    // Whether a placeholder was seen with no `:` after it yet.
    let mut open_gap = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'{' {
            if open_gap {
                return Some(
                    "two placeholders of a key template need a `:` between them, like `{a}:{b}`: values never contain `:`, so it keeps the key unambiguous",
                );
            }
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'}' {
                if bytes[j] == b'{' {
                    return Some("unclosed `{` in key template: close the placeholder with `}`");
                }
                j += 1;
            }
            if j == bytes.len() {
                return Some("unclosed `{` in key template: close the placeholder with `}`");
            }
            if j == i + 1 {
                return Some(
                    "empty placeholder `{}` in key template: name an argument, like `{id}`",
                );
            }
            open_gap = true;
            i = j + 1;
            continue;
        }
        if b == b'}' {
            return Some("unmatched `}` in key template");
        }
        if b == b':' {
            open_gap = false;
        } else if is_reserved(b) {
            return Some(
                "key template text cannot contain whitespace or `% , ( ) = ~ ! # * ? [ ] \\ \"`: the key encoding reserves them (`:` is allowed)",
            );
        }
        i += 1;
    }
    None
}

/// A full Redis key, namespace included, as a cached function reads and writes it.
///
/// The companion functions `#[redis_cache]` generates (`item_key`, `item_invalidate`) build
/// the key of one call; [`Cache::key`](crate::Cache::key) builds one by hand.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    full: String,
    // `full[prefix_start..prefix_end]` is the prefix.
    prefix_start: usize,
    prefix_end: usize,
}

impl Key {
    /// The key as sent to Redis.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The prefix it was built under.
    pub fn prefix(&self) -> &str {
        &self.full[self.prefix_start..self.prefix_end]
    }

    /// The key of this entry's fill lock: `{namespace}{{key}}#lock`. No key holds a brace
    /// (the encoding escapes them and namespaces may not have any), so the lock's hash tag
    /// is exactly the entry's key: in Redis Cluster both live in one slot, and a script may
    /// touch both. It stays inside the namespace, outside the prefix's `{prefix}:*`.
    pub fn lock_key(&self) -> String {
        let namespace = &self.full[..self.prefix_start];
        let mut lock = String::with_capacity(namespace.len() + self.full.len() + 7);
        lock.push_str(namespace);
        lock.push('{');
        lock.push_str(&self.full);
        lock.push_str("}#lock");
        lock
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.full, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Builds a [`Key`] argument by argument, the way the macro does.
#[derive(Debug)]
pub struct KeyBuilder {
    buf: String,
    prefix_start: usize,
    prefix_end: usize,
    /// Where the arguments start, after `prefix:` and the version segment if any.
    args_start: usize,
    error: Option<CacheError>,
}

impl KeyBuilder {
    pub(crate) fn new(namespace: &str, prefix: &str) -> Self {
        let mut builder = Self::unchecked(namespace, prefix);
        builder.error = validate_prefix(prefix).err();
        builder
    }

    /// For a prefix already checked: by [`Policy::new`](crate::Policy::new), or at compile time
    /// by the macro's expansion.
    pub(crate) fn unchecked(namespace: &str, prefix: &str) -> Self {
        let mut buf = String::with_capacity(namespace.len() + prefix.len() + 24);
        buf.push_str(namespace);
        let prefix_start = buf.len();
        buf.push_str(prefix);
        let prefix_end = buf.len();
        buf.push(':');
        let args_start = buf.len();
        Self {
            buf,
            prefix_start,
            prefix_end,
            args_start,
            error: None,
        }
    }

    /// Puts the version segment into the key: `prefix:={version}:…` (nothing for version 0),
    /// as a function annotated with `version = …` writes it.
    pub fn version(mut self, version: u32) -> Self {
        self.push_marker(version, None);
        self
    }

    /// Writes the version segment (`={version}` and `.{types}` when given) right after the
    /// prefix; version 0 without types writes none.
    pub(crate) fn push_marker(&mut self, version: u32, types: Option<u64>) {
        if version == 0 && types.is_none() {
            return;
        }
        let mut marker = String::with_capacity(24);
        // Writing to a String cannot fail.
        let _ = write!(marker, "={version}");
        if let Some(types) = types {
            let _ = write!(marker, ".{types:016x}");
        }
        marker.push(':');
        let at = self.prefix_end + 1;
        // Replace a marker written before (a second `version` call), keep the arguments.
        let old_end = self.args_start;
        self.buf.replace_range(at..old_end, &marker);
        self.args_start = at + marker.len();
    }

    /// Appends one argument, separated from the previous one by `:`.
    pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.push_arg(value);
        self
    }

    /// Appends one argument with no separator, as a `key = "…"` template's placeholder does.
    pub fn value<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.push_value(value);
        self
    }

    /// Appends template text. Text that breaks the template rule ([`template_error`]: a
    /// reserved byte or a brace) makes [`build`](Self::build) fail; the gap rule is the
    /// caller's, as the macro checks it for whole templates.
    pub fn literal(mut self, text: &str) -> Self {
        if text.contains(['{', '}']) || (!text.is_empty() && template_error(text).is_some()) {
            self.error.get_or_insert(CacheError::KeyArgument(format!(
                "invalid key template text {text:?}"
            )));
        }
        self.push_literal(text);
        self
    }

    /// The finished key, or the first error met (an invalid prefix, or an argument whose
    /// `Serialize` impl failed).
    pub fn build(self) -> Result<Key, CacheError> {
        match self.error {
            None => Ok(Key {
                full: self.buf,
                prefix_start: self.prefix_start,
                prefix_end: self.prefix_end,
            }),
            Some(e) => Err(e),
        }
    }

    /// Appends one argument, separated from the previous one by `:`.
    pub fn push_arg<T: Serialize + ?Sized>(&mut self, value: &T) {
        if self.buf.len() > self.args_start {
            self.buf.push(':');
        }
        self.push_value(value);
    }

    /// Appends one argument with no separator (for key templates).
    pub fn push_value<T: Serialize + ?Sized>(&mut self, value: &T) {
        if self.error.is_some() {
            return;
        }
        let start = self.buf.len();
        match value.serialize(Encoder { out: &mut self.buf }) {
            Ok(()) => bound_arg(&mut self.buf, start),
            Err(e) => self.error = Some(CacheError::KeyArgument(e.0)),
        }
    }

    /// Appends literal template text, which the macro has checked at compile time.
    pub fn push_literal(&mut self, text: &str) {
        self.buf.push_str(text);
    }
}

/// The `types` part of the version segment: FNV-1a (64 bits) over the type names joined by
/// `,`. Cheap, and stable as long as the names are; no input here comes from users.
pub(crate) fn type_hash(names: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, name) in names.iter().enumerate() {
        let sep: &[u8] = if i == 0 { b"" } else { b"," };
        for &b in sep.iter().chain(name.as_bytes()) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Replaces `buf[start..]` by its hash form when it is longer than [`MAX_ARG_LEN`].
fn bound_arg(buf: &mut String, start: usize) {
    if buf.len() - start <= MAX_ARG_LEN {
        return;
    }
    let digest = Sha256::digest(&buf.as_bytes()[start..]);
    buf.truncate(start);
    buf.push('#');
    for b in &digest[..16] {
        // Writing to a String cannot fail.
        let _ = write!(buf, "{b:02x}");
    }
}

/// Escapes `text` for use inside a SCAN `MATCH` pattern, so it matches only itself.
pub(crate) fn glob_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Bytes that strings escape and template text may not use (but `:`).
const fn is_reserved(b: u8) -> bool {
    b.is_ascii_control()
        || matches!(
            b,
            b' ' | b'%'
                | b':'
                | b','
                | b'('
                | b')'
                | b'='
                | b'~'
                | b'!'
                | b'#'
                | b'*'
                | b'?'
                | b'['
                | b']'
                | b'\\'
                | b'{'
                | b'}'
                | b'"'
        )
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_pct(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

fn push_escaped_str(out: &mut String, s: &str) {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        if is_reserved(b) {
            out.push_str(&s[plain..i]);
            push_pct(out, b);
            plain = i + 1;
        }
    }
    out.push_str(&s[plain..]);
}

/// The error of an argument's own `Serialize` impl.
#[derive(Debug)]
pub(crate) struct EncodeError(pub(crate) String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

struct Encoder<'a> {
    out: &'a mut String,
}

impl Encoder<'_> {
    fn display(self, v: impl fmt::Display) -> Result<(), EncodeError> {
        // Writing to a String cannot fail.
        let _ = write!(self.out, "{v}");
        Ok(())
    }
}

impl<'a> ser::Serializer for Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = MapEncoder<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        self.display(v)
    }
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        push_escaped_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        push_escaped_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        for &b in v {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                self.out.push(char::from(b));
            } else {
                push_pct(self.out, b);
            }
        }
        Ok(())
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.out.push('~');
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        let start = self.out.len();
        value.serialize(Encoder { out: self.out })?;
        // `Some(None)` must differ from `None`: mark a payload that could be read as absence.
        if matches!(self.out.as_bytes().get(start), Some(b'~' | b'!')) {
            self.out.insert(start, '!');
        }
        Ok(())
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        push_escaped_str(self.out, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        push_escaped_str(self.out, variant);
        self.out.push('(');
        value.serialize(Encoder { out: self.out })?;
        self.out.push(')');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self.out))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self.out))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self.out))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        push_escaped_str(self.out, variant);
        Ok(Compound::open(self.out))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapEncoder<'a>, EncodeError> {
        Ok(MapEncoder {
            out: self.out,
            entries: Vec::new(),
            pending_key: None,
        })
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        Ok(Compound::open(self.out))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, EncodeError> {
        push_escaped_str(self.out, variant);
        Ok(Compound::open(self.out))
    }
}

/// Sequences, tuples and structs: `(a,b)` and `(name=a,other=b)`.
struct Compound<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Compound<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('(');
        Compound { out, first: true }
    }

    fn separate(&mut self) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.separate();
        value.serialize(Encoder { out: self.out })
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.separate();
        push_escaped_str(self.out, name);
        self.out.push('=');
        value.serialize(Encoder { out: self.out })
    }

    fn close(self) -> Result<(), EncodeError> {
        self.out.push(')');
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.field(name, value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.field(name, value)
    }
    fn end(self) -> Result<(), EncodeError> {
        self.close()
    }
}

/// Maps are buffered and written sorted by encoded key, so iteration order never shows.
struct MapEncoder<'a> {
    out: &'a mut String,
    entries: Vec<(String, String)>,
    pending_key: Option<String>,
}

impl ser::SerializeMap for MapEncoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        let mut k = String::new();
        key.serialize(Encoder { out: &mut k })?;
        self.pending_key = Some(k);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        let k = self
            .pending_key
            .take()
            .ok_or_else(|| EncodeError("map value serialized before its key".to_owned()))?;
        let mut v = String::new();
        value.serialize(Encoder { out: &mut v })?;
        self.entries.push((k, v));
        Ok(())
    }
    fn end(mut self) -> Result<(), EncodeError> {
        self.entries.sort_unstable();
        self.out.push('(');
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push('=');
            self.out.push_str(v);
        }
        self.out.push(')');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    fn key<T: Serialize>(v: &T) -> String {
        KeyBuilder::new("", "p")
            .arg(v)
            .build()
            .expect("test values serialize")
            .full
    }

    #[test]
    fn scalars_and_strings_encode_readably() {
        assert_eq!(key(&42u64), "p:42");
        assert_eq!(key(&-7i32), "p:-7");
        assert_eq!(key(&"alice"), "p:alice");
        assert_eq!(key(&"a:b c*?[]\\\n"), "p:a%3Ab%20c%2A%3F%5B%5D%5C%0A");
        assert_eq!(key(&"café"), "p:café");
        assert_eq!(key(&true), "p:true");
    }

    #[test]
    fn options_keep_some_none_apart() {
        assert_eq!(key(&None::<u8>), "p:~");
        assert_eq!(key(&Some(5u8)), "p:5");
        assert_eq!(key(&Some(None::<u8>)), "p:!~");
        assert_eq!(key(&Some(Some(None::<u8>))), "p:!!~");
    }

    #[test]
    fn maps_are_sorted_whatever_the_iteration_order() {
        let h: HashMap<String, u32> = (0..8).map(|i| (format!("k{i}"), i)).collect();
        let b: BTreeMap<String, u32> = h.clone().into_iter().collect();
        let mut sorted_by_encoding: Vec<_> = b.iter().map(|(k, v)| format!("{k}={v}")).collect();
        sorted_by_encoding.sort();
        assert_eq!(key(&h), format!("p:({})", sorted_by_encoding.join(",")));
    }

    #[test]
    fn long_arguments_are_hashed_to_a_bounded_form() {
        let long = "x".repeat(1000);
        let k = key(&long);
        assert_eq!(k.len(), "p:".len() + 33);
        assert!(k.starts_with("p:#"));
        assert!(k[3..].bytes().all(|b| b.is_ascii_hexdigit()), "{k}");
        assert_ne!(k, key(&"x".repeat(1001)));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(validate_prefix("item").is_ok());
        assert!(validate_prefix("a/b.c-d_e").is_ok());
        for bad in ["", "a:b", "a*", "a b", "a{b}", "é"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}
