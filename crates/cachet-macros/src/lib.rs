//! The `#[memoize]` attribute of [cachet](https://docs.rs/cachet). Use it as
//! `#[cachet::memoize(...)]` (feature `macros`, on by default): the expansion names the
//! `cachet` crate.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, FnArg, ItemFn, LitBool, LitStr, ReturnType, Type};

/// Caches a function's results in a cachet cache, keyed on its arguments.
///
/// ```
/// use std::sync::LazyLock;
/// use cachet::Cache;
///
/// static CACHE: LazyLock<cachet::blocking::Cache> =
///     LazyLock::new(|| cachet::blocking::Cache::builder().in_memory().build().unwrap());
///
/// /// Computed once per `(region, year)`; kept a day.
/// #[cachet::memoize(cache = CACHE, ttl = "1d", namespace = "reports", version = "v2")]
/// fn total_sales(region: &str, year: u16) -> u64 {
///     // ... an expensive query ...
///     region.len() as u64 * u64::from(year)
/// }
///
/// assert_eq!(total_sales("north", 2026), 10_130);
/// assert_eq!(total_sales("north", 2026), 10_130); // from the cache
///
/// // async fn: the cache is a `cachet::Cache`.
/// async fn fits() -> &'static Cache {
/// #   static FITS: tokio::sync::OnceCell<Cache> = tokio::sync::OnceCell::const_new();
/// #   FITS.get_or_init(|| async { Cache::builder().in_memory().build().await.unwrap() }).await
/// }
/// #[cachet::memoize(cache = fits().await, ttl = "12h")]
/// async fn fit(dataset: String, window: u32) -> Result<Vec<f64>, std::io::Error> {
///     Ok(vec![0.5; window as usize]) // an error would be returned, not cached
/// }
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// assert_eq!(fit("sales".into(), 3).await?.len(), 3);
/// # Ok::<(), std::io::Error>(()) }).unwrap();
/// ```
///
/// # Arguments
///
/// | argument | meaning |
/// |---|---|
/// | `cache = <expr>` | required. The cache, evaluated on every call: an expression whose reference derefs to `cachet::Cache` for an `async fn`, to `cachet::blocking::Cache` for a `fn` (`&'static Cache`, `Cache`, a `LazyLock<Cache>` static, ...). It may use `.await` in an `async fn`; it cannot use the function's arguments. |
/// | `ttl = "1h"` | the entries' TTL, with the grammar of `cachet::parse_ttl` (`500ms`, `30s`, `2.5h`, `7d`, `1w`); checked at compile time. Without it, the cache's default TTL. |
/// | `namespace = "name"` | the entries go into `cache.namespace("name")`. |
/// | `version = "v2"` | part of the key: changing it makes every earlier result a miss (bump it when the function's code changes its results). |
/// | `cache_errors = true` | for a function returning `Result<T, E>`: cache errors too (the whole `Result` is stored, so `E` must be serde-serializable). By default an `Err` is returned and not cached. |
///
/// # What it does
///
/// - The key is `cachet::memo_key("<module path>::<fn name>", &(arg1, arg2, ...))`, plus a
///   `"version"` parameter when `version` is given. So without a version,
///   `cache.memoize("my_crate::reports::total_sales", &(region, year), ...)` reads and writes
///   the same entries. Every argument must be `serde::Serialize`; the result type must be
///   `Serialize + DeserializeOwned`.
/// - Every result is cached, including `()`, `None` and empty collections; a result of
///   type `Result<T, E>` (by the last segment of its name, so `io::Result<T>` too) caches
///   only `Ok` values unless `cache_errors = true`.
/// - Concurrent calls with the same arguments compute once (the cache's single flight, and
///   per-key locks across processes where the index has them): see `Cache::get_with`.
/// - **A cache failure is not the function's failure**: when the cache cannot be read or
///   written (I/O, an unreachable index, an invalid namespace, arguments that are not valid
///   key parameters), the failure is logged with `tracing::warn!` and the function's result
///   is computed and returned uncached.
/// - Methods taking `self` are refused: memoize a free function taking what it needs.
///
/// # Errors at compile time
///
/// A bad TTL:
///
/// ```compile_fail
/// # static CACHE: std::sync::LazyLock<cachet::blocking::Cache> =
/// #     std::sync::LazyLock::new(|| cachet::blocking::Cache::builder().in_memory().build().unwrap());
/// #[cachet::memoize(cache = CACHE, ttl = "7 fortnights")]
/// fn f(x: u32) -> u32 { x }
/// ```
///
/// No `cache =`:
///
/// ```compile_fail
/// #[cachet::memoize(ttl = "1h")]
/// fn f(x: u32) -> u32 { x }
/// ```
///
/// A `self` receiver:
///
/// ```compile_fail
/// # static CACHE: std::sync::LazyLock<cachet::blocking::Cache> =
/// #     std::sync::LazyLock::new(|| cachet::blocking::Cache::builder().in_memory().build().unwrap());
/// struct S;
/// impl S {
///     #[cachet::memoize(cache = CACHE)]
///     fn f(&self, x: u32) -> u32 { x }
/// }
/// ```
///
/// (The same code with a valid TTL and `cache =` compiles:)
///
/// ```
/// # static CACHE: std::sync::LazyLock<cachet::blocking::Cache> =
/// #     std::sync::LazyLock::new(|| cachet::blocking::Cache::builder().in_memory().build().unwrap());
/// #[cachet::memoize(cache = CACHE, ttl = "2w")]
/// fn f(x: u32) -> u32 { x }
/// # assert_eq!(f(3), 3);
/// ```
#[proc_macro_attribute]
pub fn memoize(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| args.parse(meta));
    syn::parse_macro_input!(attr with parser);
    let function = syn::parse_macro_input!(item as ItemFn);
    expand(args, function)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

#[derive(Default)]
struct Args {
    cache: Option<Expr>,
    ttl: Option<(std::time::Duration, Span)>,
    namespace: Option<LitStr>,
    version: Option<LitStr>,
    cache_errors: bool,
}

impl Args {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        if meta.path.is_ident("cache") {
            self.cache = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("ttl") {
            let text: LitStr = meta.value()?.parse()?;
            let ttl = parse_ttl(&text.value()).map_err(|e| syn::Error::new(text.span(), e))?;
            self.ttl = Some((ttl, text.span()));
        } else if meta.path.is_ident("namespace") {
            self.namespace = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("version") {
            self.version = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("cache_errors") {
            self.cache_errors = if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<LitBool>()?.value
            } else {
                true
            };
        } else {
            return Err(meta.error(
                "unknown memoize argument; expected `cache`, `ttl`, `namespace`, `version` or \
                 `cache_errors`",
            ));
        }
        Ok(())
    }
}

fn expand(args: Args, function: ItemFn) -> syn::Result<TokenStream2> {
    let Some(cache) = args.cache else {
        return Err(syn::Error::new(
            Span::call_site(),
            "memoize needs `cache = <expr>`: the cache to use (a `cachet::Cache` for an async \
             fn, a `cachet::blocking::Cache` for a fn), e.g. `cache = CACHE`",
        ));
    };
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new(
            constness.span(),
            "memoize cannot apply to a const fn",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            "memoize cannot apply to a variadic fn",
        ));
    }

    // Each argument becomes `__cachet_argN`; the body binds the original patterns.
    let mut idents = Vec::new();
    let mut patterns = Vec::new();
    for (i, input) in sig.inputs.iter_mut().enumerate() {
        match input {
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new(
                    receiver.span(),
                    "memoize cannot apply to a method taking `self` (the receiver would have \
                     to be part of the key); memoize a free function taking what it needs",
                ));
            }
            FnArg::Typed(typed) => {
                let ident = format_ident!("__cachet_arg{}", i);
                let pattern = std::mem::replace(&mut *typed.pat, syn::parse_quote!(#ident));
                idents.push(ident);
                patterns.push(pattern);
            }
        }
    }

    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let fallible = !args.cache_errors && is_result(&output);
    if args.cache_errors && !is_result(&output) {
        return Err(syn::Error::new(
            output.span(),
            "`cache_errors` applies to functions returning `Result<T, E>`",
        ));
    }

    let name = sig.ident.to_string();
    let version = option_str(args.version.as_ref());
    let namespace = option_str(args.namespace.as_ref());
    let ttl = match args.ttl {
        Some((ttl, span)) => {
            let (secs, nanos) = (ttl.as_secs(), ttl.subsec_nanos());
            quote_spanned!(span=> ::core::option::Option::Some(
                ::core::time::Duration::new(#secs, #nanos)))
        }
        None => quote!(::core::option::Option::None),
    };
    // Helps inference of `?` and `return` in the body (the trick of tracing's #[instrument]).
    let output_hint = quote! {
        #[allow(
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::let_unit_value,
            clippy::empty_loop
        )]
        if false {
            let __cachet_output: #output = loop {};
            return __cachet_output;
        }
    };

    let (cache_type, helper) = if sig.asyncness.is_some() {
        let helper = if fallible {
            quote!(try_get_with)
        } else {
            quote!(get_with)
        };
        let compute = quote! {
            move || async move {
                #output_hint
                #(let #patterns = #idents;)*
                #block
            }
        };
        let helper = quote!(::cachet::__private::#helper(&__cachet_memo, __cachet_cache,
            __cachet_key, #compute).await);
        (quote!(::cachet::Cache), helper)
    } else {
        let helper = if fallible {
            quote!(blocking_try_get_with)
        } else {
            quote!(blocking_get_with)
        };
        let compute = quote! {
            move || -> #output {
                #(let #patterns = #idents;)*
                #block
            }
        };
        let helper = quote!(::cachet::__private::#helper(&__cachet_memo, __cachet_cache,
            __cachet_key, #compute));
        (quote!(::cachet::blocking::Cache), helper)
    };

    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            let __cachet_memo = ::cachet::__private::Memo {
                function: ::core::concat!(::core::module_path!(), "::", #name),
                version: #version,
                namespace: #namespace,
                ttl: #ttl,
            };
            let __cachet_key = __cachet_memo.key(&(#(&#idents,)*));
            // In two steps, so that `&Cache`, `Cache` and smart pointers all deref-coerce.
            let __cachet_cache = &(#cache);
            let __cachet_cache: &#cache_type = __cachet_cache;
            #helper
        }
    })
}

fn option_str(value: Option<&LitStr>) -> TokenStream2 {
    match value {
        Some(text) => quote!(::core::option::Option::Some(#text)),
        None => quote!(::core::option::Option::None),
    }
}

/// Whether the type's name ends in `Result` (`Result<T, E>`, `io::Result<T>`, ...).
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Result"),
        Type::Paren(inner) => is_result(&inner.elem),
        Type::Group(inner) => is_result(&inner.elem),
        _ => false,
    }
}

/// `cachet::parse_ttl`'s grammar, at compile time: a positive number and a unit (ms, s, m,
/// h, d, w). Keep in step with `crates/cachet-cache/src/options.rs` (the tests compare them).
fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let bad = |why: &str| {
        format!(
            "ttl `{text}` {why}; write a positive number and a unit: ms, s, m, h, d or w \
             (e.g. 30s, 2.5h, 7d)"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| bad("has no unit"))?;
    let (number, unit) = trimmed.split_at(split);
    let unit_secs = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        _ => return Err(bad("has an unknown unit")),
    };
    let number = number.trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad("is not a number followed by a unit"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| bad("is not a number followed by a unit"))?;
    let ttl = std::time::Duration::try_from_secs_f64(value * unit_secs)
        .map_err(|_| bad("is out of range"))?;
    if ttl.is_zero() {
        return Err(bad("is zero"));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;
    use std::time::Duration;

    #[test]
    fn ttl_grammar_matches_parse_ttl() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("1m", Duration::from_secs(60)),
            ("2.5h", Duration::from_secs(9_000)),
            (" 7d ", Duration::from_secs(7 * 86_400)),
            ("1w", Duration::from_secs(604_800)),
        ] {
            assert_eq!(parse_ttl(text), Ok(expected), "{text}");
            assert_eq!(cachet::parse_ttl(text).ok(), Some(expected), "{text}");
        }
        for text in ["", "7", "7 fortnights", "0s", "-1h", "h", "1.2.3s"] {
            assert!(parse_ttl(text).is_err(), "{text}");
            assert!(cachet::parse_ttl(text).is_err(), "{text}");
        }
    }
}
