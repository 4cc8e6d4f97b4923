//! `#[redis_cache]` against a real redis-server: hits skip the body, misses store with the
//! TTL, the `Option`/`Result` rules, keys (skipped arguments, templates, prefixes, exact
//! invalidation), per-function caches, methods and generic functions.
//!
//! Every function names its cache with `cache = …`, so tests never share state; the installed
//! default cache is tested in its own binary. The lints below make the workspace's clippy run
//! check the generated code too.

#![deny(warnings, clippy::all)]

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use cached_runtime::{Cache, redis_cache};
use redis::Commands;
use serde::{Deserialize, Serialize};
use tests::{
    fixtures::{Item, item},
    topology::{TestRedis, Topology},
    topology_suite,
};

/// Counts body runs.
#[derive(Default)]
struct Runs(AtomicUsize);

impl Runs {
    fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A cache with a command timeout long enough that a busy machine never turns a hit into a
/// fail-open miss.
async fn cache_on(server: &TestRedis) -> Cache {
    server.cache().await
}

fn ttl_of(server: &TestRedis, key: &str) -> i64 {
    server.conn().ttl(key).expect("TTL")
}

fn exists(server: &TestRedis, key: &str) -> bool {
    server.conn().exists(key).expect("EXISTS")
}

#[redis_cache(prefix = "item", ttl = 600, cache = cache, skip(cache, runs))]
async fn load_item(cache: &Cache, runs: &Runs, id: u64) -> Item {
    runs.hit();
    item(id)
}

async fn a_hit_returns_the_stored_value_without_running_the_body(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    assert_eq!(load_item(&cache, &runs, 7).await, item(7));
    assert_eq!(load_item(&cache, &runs, 7).await, item(7));
    assert_eq!(runs.get(), 1, "the second call is a hit");
    assert_eq!(load_item(&cache, &runs, 8).await, item(8));
    assert_eq!(runs.get(), 2, "another argument is another entry");
}

async fn a_miss_stores_the_result_under_prefix_and_arguments_with_the_ttl(server: TestRedis) {
    let cache = cache_on(&server).await;
    load_item(&cache, &Runs::default(), 7).await;
    let ttl = ttl_of(&server, "item:7");
    assert!(ttl > 0 && ttl <= 600, "TTL {ttl}");
}

#[redis_cache(prefix = "jittered", ttl = 100, jitter = 50, cache = cache, skip(cache))]
async fn jittered(cache: &Cache, id: u64) -> u64 {
    id
}

async fn jitter_only_lengthens_the_ttl(server: TestRedis) {
    let cache = cache_on(&server).await;
    for id in 0..20 {
        jittered(&cache, id).await;
        let ttl = ttl_of(&server, &format!("jittered:{id}"));
        assert!(ttl > 0 && ttl <= 150, "TTL {ttl}");
    }
}

async fn the_cache_namespace_comes_first_in_the_key(server: TestRedis) {
    let cache = server
        .cache_builder()
        .namespace("shop:")
        .command_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("connect");
    load_item(&cache, &Runs::default(), 7).await;
    assert!(exists(&server, "shop:item:7"));
    assert!(!exists(&server, "item:7"));
}

#[redis_cache(prefix = "maybe", ttl = 600, null_ttl = 5, cache = cache, skip(cache, runs))]
async fn maybe_item(cache: &Cache, runs: &Runs, id: u64) -> Option<Item> {
    runs.hit();
    (id < 100).then(|| item(id))
}

async fn none_is_stored_as_the_null_marker_with_its_own_short_ttl(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    assert_eq!(maybe_item(&cache, &runs, 404).await, None);
    assert_eq!(maybe_item(&cache, &runs, 404).await, None);
    assert_eq!(runs.get(), 1, "a missing id reaches the body once");
    let ttl = ttl_of(&server, "maybe:404");
    assert!(ttl > 0 && ttl <= 5, "null marker TTL {ttl}");

    assert_eq!(maybe_item(&cache, &runs, 1).await, Some(item(1)));
    assert_eq!(maybe_item(&cache, &runs, 1).await, Some(item(1)));
    assert_eq!(runs.get(), 2);
    let ttl = ttl_of(&server, "maybe:1");
    assert!(ttl > 5 && ttl <= 600, "value TTL {ttl}");
}

#[derive(Debug, PartialEq)]
struct LoadError;

#[redis_cache(prefix = "fallible", ttl = 600, cache = cache, skip(cache, runs))]
async fn fallible_item(cache: &Cache, runs: &Runs, id: u64) -> Result<Item, LoadError> {
    runs.hit();
    if id == 0 {
        Err(LoadError)
    } else {
        Ok(item(id))
    }
}

async fn err_is_returned_and_never_stored_while_ok_is(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    assert_eq!(fallible_item(&cache, &runs, 0).await, Err(LoadError));
    assert_eq!(fallible_item(&cache, &runs, 0).await, Err(LoadError));
    assert_eq!(runs.get(), 2, "errors are not cached");
    assert!(!exists(&server, "fallible:0"));

    assert_eq!(fallible_item(&cache, &runs, 3).await, Ok(item(3)));
    assert_eq!(fallible_item(&cache, &runs, 3).await, Ok(item(3)));
    assert_eq!(runs.get(), 3);
    assert!(exists(&server, "fallible:3"));
}

#[redis_cache(prefix = "lookup", ttl = 600, null_ttl = 7, cache = cache, skip(cache, runs))]
async fn lookup(cache: &Cache, runs: &Runs, id: u64) -> Result<Option<Item>, LoadError> {
    runs.hit();
    match id {
        0 => Err(LoadError),
        1..100 => Ok(Some(item(id))),
        _ => Ok(None),
    }
}

async fn ok_none_is_a_null_marker_and_err_is_never_stored(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    assert_eq!(lookup(&cache, &runs, 500).await, Ok(None));
    assert_eq!(lookup(&cache, &runs, 500).await, Ok(None));
    assert_eq!(runs.get(), 1, "Ok(None) is served from the null marker");
    let ttl = ttl_of(&server, "lookup:500");
    assert!(ttl > 0 && ttl <= 7, "null marker TTL {ttl}");

    assert_eq!(lookup(&cache, &runs, 0).await, Err(LoadError));
    assert_eq!(lookup(&cache, &runs, 0).await, Err(LoadError));
    assert_eq!(runs.get(), 3);
    assert!(!exists(&server, "lookup:0"));

    assert_eq!(lookup(&cache, &runs, 2).await, Ok(Some(item(2))));
    assert_eq!(lookup(&cache, &runs, 2).await, Ok(Some(item(2))));
    assert_eq!(runs.get(), 4);
}

#[redis_cache(prefix = "search", ttl = 600, cache = cache, skip(cache, runs, request_id))]
async fn search(
    cache: &Cache,
    runs: &Runs,
    request_id: String,
    term: &str,
    page: u32,
) -> Vec<String> {
    runs.hit();
    let _ = request_id;
    vec![format!("{term}#{page}")]
}

async fn skipped_arguments_do_not_change_the_key(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    let first = search(&cache, &runs, "req-1".to_owned(), "café au lait", 2).await;
    let second = search(&cache, &runs, "req-2".to_owned(), "café au lait", 2).await;
    assert_eq!(first, second);
    assert_eq!(runs.get(), 1, "another request id is the same entry");
    // Arguments in signature order, strings with reserved bytes escaped.
    assert!(exists(&server, "search:café%20au%20lait:2"));
}

#[derive(Serialize)]
struct Filter {
    lang: String,
    page: u32,
}

#[redis_cache(prefix = "tmpl", ttl = 600, key = "v1:{id}:{filter.lang}", cache = cache)]
async fn templated(cache: &Cache, runs: &Runs, id: u64, filter: Filter) -> String {
    runs.hit();
    format!("{id}:{}:{}", filter.lang, filter.page)
}

async fn a_template_key_is_the_template_with_encoded_values(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    let filter = |page| Filter {
        lang: "en gb".to_owned(),
        page,
    };
    assert_eq!(templated(&cache, &runs, 42, filter(1)).await, "42:en gb:1");
    assert!(exists(&server, "tmpl:v1:42:en%20gb"));
    // `page` is not in the template, so it is not in the key.
    assert_eq!(templated(&cache, &runs, 42, filter(2)).await, "42:en gb:1");
    assert_eq!(runs.get(), 1);
}

#[redis_cache(prefix = "fruit.price", ttl = 600, cache = cache, skip(cache))]
async fn price(cache: &Cache, name: &str) -> String {
    format!("price of {name}")
}

#[redis_cache(prefix = "fruit.color", ttl = 600, cache = cache, skip(cache))]
async fn color(cache: &Cache, name: &str) -> String {
    format!("color of {name}")
}

async fn functions_with_the_same_arguments_and_other_prefixes_never_share_an_entry(
    server: TestRedis,
) {
    let cache = cache_on(&server).await;
    for _ in 0..2 {
        assert_eq!(price(&cache, "apple").await, "price of apple");
        assert_eq!(color(&cache, "apple").await, "color of apple");
    }
    assert!(exists(&server, "fruit.price:apple"));
    assert!(exists(&server, "fruit.color:apple"));
}

#[redis_cache(prefix = "pair", ttl = 600, cache = cache, skip(cache, runs))]
async fn pair(cache: &Cache, runs: &Runs, id: u64, lang: Option<String>) -> String {
    runs.hit();
    format!("{id}{lang:?}")
}

async fn the_key_built_by_hand_invalidates_exactly_the_entry_the_macro_wrote(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    pair(&cache, &runs, 1, Some("en".to_owned())).await;
    pair(&cache, &runs, 2, None).await;
    let key = cache
        .key("pair")
        .arg(&1u64)
        .arg(&Some("en"))
        .build()
        .expect("a valid key");
    assert!(exists(&server, key.as_str()), "{key}");
    assert!(cache.invalidate(&key).await.expect("UNLINK"));

    pair(&cache, &runs, 1, Some("en".to_owned())).await;
    pair(&cache, &runs, 2, None).await;
    assert_eq!(runs.get(), 3, "only the invalidated entry was filled again");
}

struct State {
    cache: Cache,
}

#[redis_cache(prefix = "routed", ttl = 600, cache = state.cache, skip(state))]
async fn routed(state: &State, id: u64) -> u64 {
    id * 10
}

#[tokio::test]
async fn cache_option_picks_the_cache_on_each_call() {
    let (a, b) = (
        TestRedis::start(Topology::Standalone),
        TestRedis::start(Topology::Standalone),
    );
    let state_a = State {
        cache: cache_on(&a).await,
    };
    let state_b = State {
        cache: cache_on(&b).await,
    };
    routed(&state_a, 1).await;
    routed(&state_b, 2).await;
    assert!(exists(&a, "routed:1") && !exists(&a, "routed:2"));
    assert!(exists(&b, "routed:2") && !exists(&b, "routed:1"));
}

struct Repo {
    cache: Cache,
    runs: Runs,
    /// Differs between instances; shared entries are asked for with `skip(self)`.
    name: &'static str,
}

impl Repo {
    #[redis_cache(prefix = "repo.item", ttl = 600, cache = self.cache, skip(self))]
    async fn item(&self, id: u64) -> Item {
        self.runs.hit();
        Item {
            id,
            name: self.name.to_owned(),
        }
    }

    #[redis_cache(prefix = "repo.count", ttl = 600, cache = cache, skip(cache, runs))]
    async fn count(cache: &Cache, runs: &Runs, of: &str) -> usize {
        runs.hit();
        of.len()
    }
}

async fn methods_with_skip_self_share_entries_across_instances(server: TestRedis) {
    let first = Repo {
        cache: cache_on(&server).await,
        runs: Runs::default(),
        name: "first",
    };
    let second = Repo {
        cache: first.cache.clone(),
        runs: Runs::default(),
        name: "second",
    };
    assert_eq!(first.item(1).await.name, "first");
    assert_eq!(
        second.item(1).await.name,
        "first",
        "skip(self) shares entries"
    );
    assert_eq!((first.runs.get(), second.runs.get()), (1, 0));
    assert!(exists(
        &server,
        &Repo::item_key(&first.cache, &1).expect("key").to_string()
    ));

    let runs = Runs::default();
    assert_eq!(Repo::count(&first.cache, &runs, "abc").await, 3);
    assert_eq!(Repo::count(&first.cache, &runs, "abc").await, 3);
    assert_eq!(runs.get(), 1);
}

#[redis_cache(prefix = "generic", ttl = 600, cache = cache, skip(cache, runs))]
async fn generic<K, V>(cache: &Cache, runs: &Runs, key: K, value: V) -> Vec<V>
where
    K: Serialize + Sync,
    V: Serialize + serde::de::DeserializeOwned + Clone + Send,
{
    runs.hit();
    let _ = key;
    vec![value.clone(), value]
}

async fn generic_functions_are_cached(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    assert_eq!(
        generic(&cache, &runs, "k", item(1)).await,
        vec![item(1), item(1)]
    );
    assert_eq!(
        generic(&cache, &runs, "k", item(1)).await,
        vec![item(1), item(1)]
    );
    assert_eq!(runs.get(), 1);
    let key = generic_key::<&str, Item>(&cache, &"k", &item(1)).expect("key");
    assert!(key.as_str().starts_with("generic:=0."), "{key}");
    assert!(exists(&server, key.as_str()), "{key}");
    assert_eq!(generic(&cache, &runs, 7u8, 1.5f64).await, vec![1.5, 1.5]);
    assert_eq!(runs.get(), 2);
}

async fn cached_futures_run_on_spawned_tasks(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = std::sync::Arc::new(Runs::default());
    let task = {
        let (cache, runs) = (cache.clone(), runs.clone());
        tokio::spawn(async move { load_item(&cache, &runs, 5).await })
    };
    assert_eq!(task.await.expect("the task completes"), item(5));
    assert_eq!(load_item(&cache, &runs, 5).await, item(5));
    assert_eq!(runs.get(), 1);
}

// Issue 9: each hole has a test that failed on the first version of the macro.

/// A template whose gaps hold `:`: two different pairs never share a key (`{a}-{b}` gave
/// `("x-y", "z")` and `("x", "y-z")` one key and is now a compile error: ui/fail).
#[redis_cache(prefix = "tmpl.pair", ttl = 600, key = "{a}:-{b}", cache = cache)]
async fn joined(cache: &Cache, runs: &Runs, a: &str, b: &str) -> String {
    runs.hit();
    format!("{a}|{b}")
}

async fn template_pairs_that_join_to_the_same_text_keep_their_own_entries(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    assert_eq!(joined(&cache, &runs, "x-y", "z").await, "x-y|z");
    assert_eq!(joined(&cache, &runs, "x", "y-z").await, "x|y-z");
    assert_eq!(runs.get(), 2);
}

struct TenantRepo {
    cache: Cache,
    tenant: u32,
    runs: Runs,
}

impl TenantRepo {
    #[redis_cache(prefix = "tenant.item", ttl = 600, key = "{self.tenant}:{id}", cache = self.cache)]
    async fn item(&self, id: u64) -> Item {
        self.runs.hit();
        Item {
            id,
            name: format!("tenant {}", self.tenant),
        }
    }
}

async fn self_fields_in_the_key_keep_instances_apart(server: TestRedis) {
    let cache = cache_on(&server).await;
    let one = TenantRepo {
        cache: cache.clone(),
        tenant: 1,
        runs: Runs::default(),
    };
    let two = TenantRepo {
        cache: cache.clone(),
        tenant: 2,
        runs: Runs::default(),
    };
    assert_eq!(one.item(7).await.name, "tenant 1");
    assert_eq!(
        two.item(7).await.name,
        "tenant 2",
        "tenant 2 never reads tenant 1's entry"
    );
    assert_eq!(one.item(7).await.name, "tenant 1");
    assert_eq!((one.runs.get(), two.runs.get()), (1, 1));
    let key = one.item_key(&cache, &7).expect("key");
    assert_eq!(key.as_str(), "tenant.item:1:7");
    assert!(exists(&server, key.as_str()));
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct User {
    name: String,
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Order {
    total: u64,
}

trait Load {
    fn load(id: u64) -> Self;
}

impl Load for User {
    fn load(id: u64) -> Self {
        User {
            name: format!("user {id}"),
        }
    }
}

impl Load for Order {
    fn load(id: u64) -> Self {
        Order { total: id * 100 }
    }
}

#[redis_cache(prefix = "typed", ttl = 600, cache = cache, skip(cache, runs))]
async fn typed<T>(cache: &Cache, runs: &Runs, id: u64) -> Option<T>
where
    T: Load + Serialize + serde::de::DeserializeOwned,
{
    runs.hit();
    Some(T::load(id))
}

async fn instantiations_of_a_generic_function_never_read_each_others_entries(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    assert_eq!(typed::<User>(&cache, &runs, 1).await, Some(User::load(1)));
    // Both types decode from any JSON object (`serde(default)`): only the key keeps them apart.
    assert_eq!(typed::<Order>(&cache, &runs, 1).await, Some(Order::load(1)));
    assert_eq!(typed::<User>(&cache, &runs, 1).await, Some(User::load(1)));
    assert_eq!(runs.get(), 2);
    let user = typed_key::<User>(&cache, &1).expect("key");
    let order = typed_key::<Order>(&cache, &1).expect("key");
    assert_ne!(user, order);
    assert!(exists(&server, user.as_str()) && exists(&server, order.as_str()));
}

/// The old binary of a rolling deploy.
#[redis_cache(prefix = "deployed", ttl = 600, cache = cache, skip(cache, runs))]
async fn old_binary(cache: &Cache, runs: &Runs, id: u64) -> u64 {
    runs.hit();
    id
}

/// The new binary: the same function with a new value type, so a new version.
#[redis_cache(prefix = "deployed", ttl = 600, version = 1, cache = cache, skip(cache, runs))]
async fn new_binary(cache: &Cache, runs: &Runs, id: u64) -> String {
    runs.hit();
    format!("#{id}")
}

async fn old_and_new_versions_alternating_each_hit_their_own_entry(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    for _ in 0..2 {
        assert_eq!(old_binary(&cache, &runs, 1).await, 1);
        assert_eq!(new_binary(&cache, &runs, 1).await, "#1");
    }
    assert_eq!(runs.get(), 2, "each version filled once and then hit");
    assert!(exists(&server, "deployed:1"));
    assert!(exists(&server, "deployed:=1:1"));
    assert_eq!(
        new_binary_key(&cache, &1).expect("key").as_str(),
        "deployed:=1:1"
    );
    // Prefix invalidation covers every version.
    assert_eq!(cache.invalidate_prefix("deployed").await.expect("scan"), 2);
}

async fn the_companion_invalidates_exactly_the_entry_the_function_wrote(server: TestRedis) {
    let cache = cache_on(&server).await;
    let runs = Runs::default();
    pair(&cache, &runs, 1, Some("en".to_owned())).await;
    pair(&cache, &runs, 2, None).await;
    assert!(
        pair_invalidate(&cache, &1, &Some("en".to_owned()))
            .await
            .expect("UNLINK")
    );
    assert!(
        !pair_invalidate(&cache, &1, &Some("en".to_owned()))
            .await
            .expect("UNLINK")
    );
    pair(&cache, &runs, 1, Some("en".to_owned())).await;
    pair(&cache, &runs, 2, None).await;
    assert_eq!(runs.get(), 3, "only the invalidated entry was filled again");
}

topology_suite!(standalone, cluster;
    a_hit_returns_the_stored_value_without_running_the_body,
    a_miss_stores_the_result_under_prefix_and_arguments_with_the_ttl,
    jitter_only_lengthens_the_ttl,
    the_cache_namespace_comes_first_in_the_key,
    none_is_stored_as_the_null_marker_with_its_own_short_ttl,
    err_is_returned_and_never_stored_while_ok_is,
    ok_none_is_a_null_marker_and_err_is_never_stored,
    skipped_arguments_do_not_change_the_key,
    a_template_key_is_the_template_with_encoded_values,
    functions_with_the_same_arguments_and_other_prefixes_never_share_an_entry,
    the_key_built_by_hand_invalidates_exactly_the_entry_the_macro_wrote,
    methods_with_skip_self_share_entries_across_instances,
    generic_functions_are_cached,
    cached_futures_run_on_spawned_tasks,
    template_pairs_that_join_to_the_same_text_keep_their_own_entries,
    self_fields_in_the_key_keep_instances_apart,
    instantiations_of_a_generic_function_never_read_each_others_entries,
    old_and_new_versions_alternating_each_hit_their_own_entry,
    the_companion_invalidates_exactly_the_entry_the_function_wrote,
);

topology_suite!(sentinel;
    a_hit_returns_the_stored_value_without_running_the_body,
    none_is_stored_as_the_null_marker_with_its_own_short_ttl,
    the_companion_invalidates_exactly_the_entry_the_function_wrote,
);
