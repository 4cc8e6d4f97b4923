//! Key encoding: distinct argument tuples never share a key, neither do templates that pass
//! the template rule, versions keep apart, and keys are stable.

use std::collections::{BTreeMap, HashMap, HashSet};

use cached_runtime::{Cache, KeyBuilder, key::template_error};
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
    // The first 128 bits of the SHA-256 of the 200-byte encoding, as `sha256sum` computes it.
    let long = cache
        .key("p")
        .arg(&"x".repeat(200))
        .build()
        .expect("serializes");
    assert_eq!(long.as_str(), "p:#aa20c23e3201834050679e1d88941b9a");
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

#[test]
fn the_version_segment_follows_the_prefix_and_version_0_has_none() {
    let cache = lazy_cache();
    let key = |v: u32| {
        cache
            .key("item")
            .version(v)
            .arg(&7u8)
            .build()
            .expect("serializes")
    };
    assert_eq!(key(0).as_str(), "item:7");
    assert_eq!(key(3).as_str(), "item:=3:7");
    assert_eq!(key(3).prefix(), "item");
    // No argument encodes to a leading `=`: an unversioned key never equals a versioned one.
    let lookalike = cache
        .key("item")
        .arg(&"=3")
        .arg(&7u8)
        .build()
        .expect("serializes");
    assert_ne!(lookalike, key(3));
}

/// One piece of a generated template: literal text, or a placeholder for the next value.
#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Value,
}

/// Templates built from the characters a template may use and some it may not.
fn template() -> impl Strategy<Value = Vec<Piece>> {
    let text = proptest::collection::vec(
        prop_oneof![
            Just(':'),
            Just('-'),
            Just('/'),
            Just('.'),
            Just('a'),
            Just('@'),
            Just('=')
        ],
        0..3,
    )
    .prop_map(|cs| Piece::Text(cs.into_iter().collect()));
    proptest::collection::vec(prop_oneof![text, Just(Piece::Value)], 1..6)
}

fn template_string(pieces: &[Piece]) -> String {
    let mut n = 0;
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.clone(),
            Piece::Value => {
                n += 1;
                format!("{{v{n}}}")
            }
        })
        .collect()
}

fn template_key(cache: &Cache, pieces: &[Piece], values: &[String]) -> String {
    let mut key = cache.key("t");
    let mut values = values.iter();
    for piece in pieces {
        key = match piece {
            Piece::Text(t) => key.literal(t),
            Piece::Value => key.value(values.next().expect("one value per placeholder")),
        };
    }
    key.build().expect("a valid template").to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every template the rule accepts is injective: adversarial values (drawn from the
    /// template's own text characters) never give two different tuples one key.
    #[test]
    fn accepted_templates_never_give_two_value_tuples_one_key(
        pieces in template(),
        tuples in proptest::collection::vec(
            proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![Just(':'), Just('-'), Just('/'), Just('a'), Just('='), Just('{')],
                    0..4,
                ).prop_map(|cs| cs.into_iter().collect::<String>()),
                5,
            ),
            2..24,
        ),
    ) {
        let template = template_string(&pieces);
        prop_assume!(template_error(&template).is_none());
        let cache = lazy_cache();
        let arity = pieces.iter().filter(|p| matches!(p, Piece::Value)).count();
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        for mut values in tuples {
            values.truncate(arity);
            let k = template_key(&cache, &pieces, &values);
            if let Some(prev) = seen.get(&k) {
                prop_assert_eq!(prev, &values, "template {} gives two tuples key {}", template, k);
            }
            seen.insert(k, values);
        }
    }

    /// The rule rejects every template where two placeholders have no `:` between them, the
    /// shape that let `("x-y", "z")` and `("x", "y-z")` share `{a}-{b}`'s key.
    #[test]
    fn templates_without_a_colon_between_placeholders_are_rejected(gap in "[-a./]{0,3}") {
        let template = format!("{{a}}{gap}{{b}}");
        prop_assert!(template_error(&template).is_some(), "{} accepted", template);
        let fixed = format!("{{a}}{gap}:{{b}}");
        prop_assert!(template_error(&fixed).is_none(), "{} rejected", fixed);
    }
}

#[test]
fn the_template_rule_names_what_is_wrong() {
    assert!(template_error("{a}:{b}").is_none());
    assert!(template_error("v1:{id}/x").is_none());
    for (bad, says) in [
        ("", "empty key template"),
        ("{a}-{b}", "need a `:` between them"),
        ("{a}", ""),
        ("a b", "cannot contain"),
        ("{a", "unclosed"),
        ("a}", "unmatched"),
        ("{}", "empty placeholder"),
    ] {
        match template_error(bad) {
            Some(message) => assert!(message.contains(says), "{bad:?}: {message}"),
            None => assert_eq!(bad, "{a}", "{bad:?} accepted"),
        }
    }
}
