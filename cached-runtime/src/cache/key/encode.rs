//! The argument encoder: one key argument from its `Serialize` impl, as the parent module's
//! table describes. Every delimiter inside a string is percent-encoded, so an encoding never
//! holds `:` and one type's values never share one.

use std::fmt::{self, Write as _};

use serde::ser::{self, Serialize};

use super::is_reserved;

/// Appends the encoding of `value` to `out`; on an error `out` may hold part of it.
pub(super) fn encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut String,
) -> Result<(), EncodeError> {
    value.serialize(Encoder { out })
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
pub(super) struct EncodeError(pub(super) String);

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
    use crate::cache::key::KeyBuilder;

    fn key<T: Serialize>(v: &T) -> String {
        KeyBuilder::new("", "p")
            .arg(v)
            .build()
            .expect("test values serialize")
            .as_str()
            .to_owned()
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
    fn an_argument_whose_serialize_fails_is_an_error_not_a_key() {
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("no key for this"))
            }
        }
        let mut out = String::new();
        let e = encode(&Refuses, &mut out).expect_err("the impl refused");
        assert_eq!(e.to_string(), "no key for this");
    }
}
