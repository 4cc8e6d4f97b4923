//! Keys: the layout, the prefix and template rules (one `const fn` each, which the macro's
//! expansion evaluates at compile time), and the encoding of one argument (`encode`).
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

mod encode;

use std::fmt::{self, Write as _};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::tags::Tags;
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
    /// The entry's tags; not part of its identity (see [`Tags`]).
    pub(crate) tags: Tags,
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

/// A key as debug logs show it: its prefix and a hash, never the argument values (they may be
/// personal data). The whole key is logged at trace level only.
pub(crate) struct KeyTag<'a>(pub(crate) &'a Key);

impl fmt::Display for KeyTag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Computed only when a log line is written; the same in every process.
        let digest = Sha256::digest(self.0.as_str().as_bytes());
        write!(f, "{}#", self.0.prefix())?;
        digest[..8].iter().try_for_each(|b| write!(f, "{b:02x}"))
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
    tags: Tags,
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
            tags: Tags::default(),
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
                tags: self.tags,
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
        if let Err(e) = push_encoded(&mut self.buf, value) {
            self.error = Some(e);
        }
    }

    /// Tags the entry with `text`, as `tags = ["…"]` does once its placeholders are
    /// filled in: [`Cache::invalidate_tags`](crate::Cache::invalidate_tags) with the same
    /// text drops it. Text that is empty or holds a brace makes [`build`](Self::build) fail.
    pub fn tag(mut self, text: &str) -> Self {
        if let Err(e) = super::tags::check_text(text) {
            self.error.get_or_insert(e);
        }
        self.push_tag_start();
        self.push_tag_literal(text);
        self
    }

    /// Starts a tag (macro expansions: a `tags` template's text and values follow).
    pub fn push_tag_start(&mut self) {
        let namespace = &self.buf[..self.prefix_start];
        self.tags.start(namespace);
    }

    /// Appends a tag template's literal text, checked at compile time.
    pub fn push_tag_literal(&mut self, text: &str) {
        self.tags.push_str(text);
    }

    /// Appends a tag template's value, encoded as a key argument.
    pub fn push_tag_value<T: Serialize + ?Sized>(&mut self, value: &T) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.tags.push_value(value) {
            self.error = Some(e);
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

/// Appends the encoding of one argument (bounded: see [`MAX_ARG_LEN`]).
pub(crate) fn push_encoded<T: Serialize + ?Sized>(
    buf: &mut String,
    value: &T,
) -> Result<(), CacheError> {
    let start = buf.len();
    match encode::encode(value, buf) {
        Ok(()) => {
            bound_arg(buf, start);
            Ok(())
        }
        Err(e) => Err(CacheError::KeyArgument(e.0)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key<T: Serialize>(v: &T) -> String {
        KeyBuilder::new("", "p")
            .arg(v)
            .build()
            .expect("test values serialize")
            .full
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

    #[test]
    fn logged_keys_show_the_prefix_and_a_hash_never_the_arguments() {
        let secret = KeyBuilder::new("ns:", "user")
            .arg(&"alice@example.com")
            .build()
            .expect("a string serializes");
        let other = KeyBuilder::new("ns:", "user")
            .arg(&"bob@example.com")
            .build()
            .expect("a string serializes");
        let shown = KeyTag(&secret).to_string();
        assert!(!shown.contains("alice"), "{shown}");
        let (prefix, hash) = shown.split_once('#').expect("prefix#hash");
        assert_eq!(prefix, "user");
        assert_eq!(hash.len(), 16);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{shown}");
        assert_eq!(shown, KeyTag(&secret).to_string(), "stable");
        assert_ne!(shown, KeyTag(&other).to_string());
    }
}
