//! Key encoding: distinct argument tuples never share a key, and keys are stable.

use std::collections::{BTreeMap, HashMap, HashSet};

use cached_runtime::{Cache, KeyBuilder};
use proptest::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
struct Query {
    page: Option<u32>,
    tags: Vec<String>,
    lang: Option<Option<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
enum Filter {
    All,
    Id(u64),
    Range { from: i32, to: i32 },
    Pair(String, String),
}

type Args = (
    String,
    i64,
    Option<String>,
    Query,
    Filter,
    BTreeMap<String, u8>,
    Vec<u8>,
);

/// Strings drawn mostly from characters that a naive encoding would confuse.
fn tricky_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(':'),
            Just('*'),
            Just('?'),
            Just('['),
            Just(']'),
            Just('\\'),
            Just(' '),
            Just('\n'),
            Just('%'),
            Just(','),
            Just('('),
            Just(')'),
            Just('='),
            Just('~'),
            Just('!'),
            Just('#'),
            Just('{'),
            Just('}'),
            Just('"'),
            Just('é'),
            Just('日'),
            Just('a'),
            Just('1'),
            Just('-'),
        ],
        0..5,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn args() -> impl Strategy<Value = Args> {
    let query = (
        proptest::option::of(0u32..3),
        proptest::collection::vec(tricky_string(), 0..3),
        proptest::option::of(proptest::option::of(tricky_string())),
    )
        .prop_map(|(page, tags, lang)| Query { page, tags, lang });
    let filter = prop_oneof![
        Just(Filter::All),
        (0u64..3).prop_map(Filter::Id),
        (-2i32..2, -2i32..2).prop_map(|(from, to)| Filter::Range { from, to }),
        (tricky_string(), tricky_string()).prop_map(|(a, b)| Filter::Pair(a, b)),
    ];
    (
        tricky_string(),
        -3i64..3,
        proptest::option::of(tricky_string()),
        query,
        filter,
        proptest::collection::btree_map(tricky_string(), 0u8..3, 0..3),
        proptest::collection::vec(any::<u8>(), 0..3),
    )
}

fn key(cache: &Cache, a: &Args) -> String {
    cache
        .key("p")
        .arg(&a.0)
        .arg(&a.1)
        .arg(&a.2)
        .arg(&a.3)
        .arg(&a.4)
        .arg(&a.5)
        .arg(&a.6)
        .build()
        .expect("every argument serializes")
        .to_string()
}

fn lazy_cache() -> Cache {
    // No command is sent: only the key builder is used.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();
    Cache::builder("redis://127.0.0.1:1")
        .build_lazy()
        .expect("valid config")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn distinct_argument_tuples_never_share_a_key(tuples in proptest::collection::vec(args(), 1..64)) {
        let cache = lazy_cache();
        let mut seen: HashMap<String, Args> = HashMap::new();
        for a in tuples {
            let k = key(&cache, &a);
            if let Some(prev) = seen.get(&k) {
                prop_assert_eq!(prev, &a, "two tuples share key {}", k);
            }
            seen.insert(k, a);
        }
    }

    #[test]
    fn keys_never_hold_glob_characters_outside_the_prefix(a in args()) {
        let cache = lazy_cache();
        let k = key(&cache, &a);
        prop_assert!(!k.contains(['*', '?', '[', ']', '\\', ' ', '\n', '{', '}']), "{}", k);
    }
}

#[test]
fn keys_are_stable_across_processes_and_releases() {
    // Pinned strings: a change here breaks every deployed cache, so it must be deliberate.
    let cache = lazy_cache();
    let q = Query {
        page: Some(2),
        tags: vec!["a:b".into(), "c d".into()],
        lang: Some(None),
    };
    let k = cache
        .key("search")
        .arg(&"caf\u{e9}*")
        .arg(&-5i64)
        .arg(&q)
        .arg(&Filter::Range { from: 1, to: 2 })
        .arg(&HashSet::<u8>::new())
        .build()
        .expect("serializes");
    assert_eq!(
        k.as_str(),
        "search:caf\u{e9}%2A:-5:(page=2,tags=(a%3Ab,c%20d),lang=!~):Range(from=1,to=2):()"
    );
    // XXH3-128 of the 200-byte encoding, as the reference xxhash library computes it.
    let long = cache
        .key("p")
        .arg(&"x".repeat(200))
        .build()
        .expect("serializes");
    assert_eq!(long.as_str(), "p:#062dfbe359870f1a0f7bed28ebd8500d");
}

#[test]
fn a_builder_without_a_cache_matches_the_cache_key() {
    let cache = lazy_cache();
    let via_cache: KeyBuilder = cache.key("item");
    assert_eq!(
        via_cache.arg(&7u8).build().expect("serializes").as_str(),
        "item:7"
    );
}
