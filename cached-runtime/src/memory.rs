//! Placeholder until the in-process store lands.
#![allow(dead_code)]

#[derive(Debug, Default)]
pub(crate) struct MemoryStore;

impl MemoryStore {
    pub(crate) fn new() -> Self {
        Self
    }
    pub(crate) fn get(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }
    pub(crate) fn set_ex(&self, _key: &str, _value: &[u8], _secs: u64) {}
    pub(crate) fn set_px(&self, _key: &str, _value: &[u8], _ms: u64) {}
    pub(crate) fn set_nx_px(&self, _key: &str, _value: &[u8], _ms: u64) -> bool {
        true
    }
    pub(crate) fn delete_if_eq(&self, _key: &str, _expected: &[u8]) -> bool {
        true
    }
    pub(crate) fn delete(&self, _keys: &[&str]) -> u64 {
        0
    }
    pub(crate) fn delete_matching(&self, _pattern: &str) -> u64 {
        0
    }
    pub(crate) fn ttl_ms(&self, _key: &str) -> Option<u64> {
        None
    }
    pub(crate) fn len(&self) -> usize {
        0
    }
    pub(crate) fn flush(&self) {}
}

pub(crate) fn glob_match(_pattern: &[u8], _text: &[u8]) -> bool {
    true
}
