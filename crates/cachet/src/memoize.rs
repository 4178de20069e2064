//! Run-time support of [`#[cachet::memoize]`](crate::memoize): what the macro's expansion
//! calls. Not a public API (hidden, may change in any release).
//!
//! Every helper returns the function's own result, never a cache error: when the cache fails
//! (an unreadable index, an invalid namespace, arguments that are not valid key parameters),
//! the failure is logged with `tracing::warn!` and the function runs uncached.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use cachet_cache::{Cache, InsertOptions, blocking, memo_key};
use cachet_core::{Error, Params, Result};
use serde::de::DeserializeOwned;
use serde::ser::Serialize;

/// What the attribute said about one function.
#[derive(Debug, Clone, Copy)]
pub struct Memo {
    /// `module_path!()::name`.
    pub function: &'static str,
    /// Part of the key, when given (`version = "..."`).
    pub version: Option<&'static str>,
    /// The namespace the entries go to, when given (`namespace = "..."`).
    pub namespace: Option<&'static str>,
    /// The entries' TTL, when given (`ttl = "..."`, parsed at compile time).
    pub ttl: Option<Duration>,
}

impl Memo {
    /// The key of a call: [`memo_key`] of the function and the arguments (a tuple), plus
    /// `"version"` when one is given.
    pub fn key<A: Serialize + ?Sized>(&self, args: &A) -> Result<Params> {
        let key = memo_key(self.function, args)?;
        Ok(match self.version {
            Some(version) => key.with("version", version),
            None => key,
        })
    }

    fn options(&self) -> InsertOptions {
        match self.ttl {
            Some(ttl) => InsertOptions::new().with_ttl(ttl),
            None => InsertOptions::new(),
        }
    }

    /// The cache the entries go to: `cache`, or its view of the memo's namespace.
    fn scoped<'c>(&self, cache: &'c Cache) -> Cow<'c, Cache> {
        match self.namespace {
            Some(ns) => Cow::Owned(cache.namespace(ns)),
            None => Cow::Borrowed(cache),
        }
    }

    /// [`scoped`](Self::scoped) for the blocking cache.
    fn scoped_blocking<'c>(&self, cache: &'c blocking::Cache) -> Cow<'c, blocking::Cache> {
        match self.namespace {
            Some(ns) => Cow::Owned(cache.namespace(ns)),
            None => Cow::Borrowed(cache),
        }
    }

    fn uncached(&self, error: &Error) {
        match error {
            // A waiter whose leader's computation failed: computing is simply our turn.
            Error::Compute { .. } => tracing::debug!(function = self.function, error = %error,
                "memoize: a concurrent call failed; computing"),
            _ => tracing::warn!(function = self.function, error = %error,
                "memoize: the cache failed; computing the result without it"),
        }
    }
}

const COMPUTED_ONCE: &str = "a memoized function's cache reported an error after computing \
                             (get_with returns every computed value); please report this bug";

/// A memoized `async fn` whose whole result is cached.
pub async fn get_with<T, F, Fut>(memo: &Memo, cache: &Cache, key: Result<Params>, compute: F) -> T
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let mut compute = Some(compute);
    let cached = match key {
        Ok(key) => {
            let slot = &mut compute;
            let init = move || (slot.take().expect(COMPUTED_ONCE))();
            memo.scoped(cache)
                .get_with_options(key, memo.options(), init)
                .await
        }
        Err(e) => Err(e),
    };
    match cached {
        Ok(value) => value,
        Err(e) => {
            memo.uncached(&e);
            (compute.take().expect(COMPUTED_ONCE))().await
        }
    }
}

/// A memoized `async fn` returning `Result<T, E>`: `Ok` values are cached, errors are
/// returned as they are and not cached.
pub async fn try_get_with<T, E, F, Fut>(
    memo: &Memo,
    cache: &Cache,
    key: Result<Params>,
    compute: F,
) -> std::result::Result<T, E>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let mut compute = Some(compute);
    let mut failure = None;
    let cached = match key {
        Ok(key) => {
            let (slot, failed) = (&mut compute, &mut failure);
            let init = move || async move {
                (slot.take().expect(COMPUTED_ONCE))().await.map_err(|e| {
                    *failed = Some(e);
                    NotCached
                })
            };
            memo.scoped(cache)
                .try_get_with_options(key, memo.options(), init)
                .await
        }
        Err(e) => Err(e),
    };
    match cached {
        Ok(value) => Ok(value),
        Err(_) if failure.is_some() => Err(failure.take().expect("checked")),
        Err(e) => {
            memo.uncached(&e);
            (compute.take().expect(COMPUTED_ONCE))().await
        }
    }
}

/// A memoized `fn` (blocking cache) whose whole result is cached.
pub fn blocking_get_with<T, F>(
    memo: &Memo,
    cache: &blocking::Cache,
    key: Result<Params>,
    compute: F,
) -> T
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    let mut compute = Some(compute);
    let cached = match key {
        Ok(key) => {
            let slot = &mut compute;
            let init = move || (slot.take().expect(COMPUTED_ONCE))();
            memo.scoped_blocking(cache)
                .get_with_options(key, memo.options(), init)
        }
        Err(e) => Err(e),
    };
    match cached {
        Ok(value) => value,
        Err(e) => {
            memo.uncached(&e);
            (compute.take().expect(COMPUTED_ONCE))()
        }
    }
}

/// A memoized `fn` (blocking cache) returning `Result<T, E>`: `Ok` values are cached,
/// errors are returned as they are and not cached.
pub fn blocking_try_get_with<T, E, F>(
    memo: &Memo,
    cache: &blocking::Cache,
    key: Result<Params>,
    compute: F,
) -> std::result::Result<T, E>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> std::result::Result<T, E>,
{
    let mut compute = Some(compute);
    let mut failure = None;
    let cached = match key {
        Ok(key) => {
            let (slot, failed) = (&mut compute, &mut failure);
            let init = move || {
                (slot.take().expect(COMPUTED_ONCE))().map_err(|e| {
                    *failed = Some(e);
                    NotCached
                })
            };
            memo.scoped_blocking(cache)
                .try_get_with_options(key, memo.options(), init)
        }
        Err(e) => Err(e),
    };
    match cached {
        Ok(value) => Ok(value),
        Err(_) if failure.is_some() => Err(failure.take().expect("checked")),
        Err(e) => {
            memo.uncached(&e);
            (compute.take().expect(COMPUTED_ONCE))()
        }
    }
}

/// The error `try_get_with` sees when the function failed (the function's own error is kept
/// aside and returned to the caller).
#[derive(Debug)]
struct NotCached;

impl std::fmt::Display for NotCached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the memoized function returned an error (not cached)")
    }
}

impl std::error::Error for NotCached {}
