//! Key derivation promises: canonical, injective, order-independent, type-aware, stable.

use std::collections::BTreeMap;

use cachet_core::{CacheKey, ParamValue, Params, params};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = ParamValue> {
    prop_oneof![
        Just(ParamValue::Null),
        any::<bool>().prop_map(ParamValue::Bool),
        any::<i64>().prop_map(|v| ParamValue::Int(i128::from(v))),
        any::<f64>().prop_map(ParamValue::Float),
        ".{0,8}".prop_map(ParamValue::Str),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(ParamValue::Bytes),
    ]
}

fn value() -> impl Strategy<Value = ParamValue> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(ParamValue::List),
            proptest::collection::btree_map(".{0,4}", inner, 0..4).prop_map(ParamValue::Map),
        ]
    })
}

fn params_strategy() -> impl Strategy<Value = BTreeMap<String, ParamValue>> {
    proptest::collection::btree_map("[a-z]{0,4}", value(), 0..5)
}

/// Structural equality with floats compared by canonical bit pattern (what the key promises).
fn canonical_eq(a: &BTreeMap<String, ParamValue>, b: &BTreeMap<String, ParamValue>) -> bool {
    let pa: Params = a.clone().into_iter().collect();
    let pb: Params = b.clone().into_iter().collect();
    pa.canonical_bytes() == pb.canonical_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn insertion_order_does_not_change_the_key(map in params_strategy()) {
        let forward: Params = map.clone().into_iter().collect();
        let backward: Params = map.into_iter().rev().collect();
        prop_assert_eq!(CacheKey::derive("", &forward), CacheKey::derive("", &backward));
    }

    #[test]
    fn different_params_give_different_canonical_bytes(a in params_strategy(), b in params_strategy()) {
        let pa: Params = a.clone().into_iter().collect();
        let pb: Params = b.clone().into_iter().collect();
        if !canonical_eq(&a, &b) {
            prop_assert_ne!(pa.canonical_bytes(), pb.canonical_bytes());
        }
    }

    #[test]
    fn canonical_encoding_is_a_prefix_free_code(a in value(), b in value()) {
        // Injectivity of the concatenation: no value's encoding is a proper prefix of another's.
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        a.encode_canonical(&mut ea);
        b.encode_canonical(&mut eb);
        if ea != eb {
            prop_assert!(!eb.starts_with(&ea) && !ea.starts_with(&eb));
        }
    }

    #[test]
    fn namespace_separates_keys(map in params_strategy(), ns in "[a-z]{1,6}") {
        let p: Params = map.into_iter().collect();
        prop_assert_ne!(CacheKey::derive("", &p), CacheKey::derive(&ns, &p));
    }
}

#[test]
fn values_of_different_types_give_different_keys() {
    let variants = [
        params! { "x" => 1 },
        params! { "x" => 1.0 },
        params! { "x" => "1" },
        params! { "x" => true },
        params! { "x" => ParamValue::bytes(vec![1u8]) },
        params! { "x" => vec![1] },
        params! { "x" => ParamValue::Null },
    ];
    let keys: std::collections::HashSet<_> =
        variants.iter().map(|p| CacheKey::derive("", p)).collect();
    assert_eq!(keys.len(), variants.len());
}

#[test]
fn nesting_changes_the_key() {
    let a = params! { "x" => ParamValue::List(vec![ParamValue::List(vec![1.into()]), 2.into()]) };
    let b = params! { "x" => ParamValue::List(vec![1.into(), ParamValue::List(vec![2.into()])]) };
    let c = params! { "x" => vec![1, 2] };
    assert_ne!(CacheKey::derive("", &a), CacheKey::derive("", &b));
    assert_ne!(CacheKey::derive("", &a), CacheKey::derive("", &c));
    assert_ne!(CacheKey::derive("", &b), CacheKey::derive("", &c));
}

#[test]
fn separators_inside_strings_cannot_forge_another_key() {
    // The predecessor joined "name:value" with "|": these two collided there.
    let a = params! { "a" => "1|b:str:2" };
    let b = params! { "a" => "1", "b" => "2" };
    assert_ne!(CacheKey::derive("", &a), CacheKey::derive("", &b));
}

#[test]
fn signed_and_unsigned_integers_of_equal_value_are_the_same_param() {
    assert_eq!(
        CacheKey::derive("", &params! { "n" => 5u8 }),
        CacheKey::derive("", &params! { "n" => 5i64 })
    );
}

#[test]
fn all_nans_are_one_param_but_zero_signs_differ() {
    let nan_a = params! { "f" => f64::NAN };
    let nan_b = params! { "f" => f64::from_bits(0x7ff8_0000_0000_0001) };
    assert_eq!(CacheKey::derive("", &nan_a), CacheKey::derive("", &nan_b));
    assert_ne!(
        CacheKey::derive("", &params! { "f" => 0.0 }),
        CacheKey::derive("", &params! { "f" => -0.0 })
    );
}

#[test]
fn serde_structs_become_params_field_by_field() {
    #[derive(serde::Serialize)]
    struct Args {
        window: u32,
        model: &'static str,
    }
    let from_struct = Params::from_serialize(&Args {
        window: 30,
        model: "xgb",
    })
    .unwrap();
    assert_eq!(from_struct, params! { "model" => "xgb", "window" => 30 });
}

#[test]
fn file_content_params_follow_content_not_path() {
    let dir = std::env::temp_dir().join(format!("cachet-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    std::fs::write(&a, b"same").unwrap();
    std::fs::write(&b, b"same").unwrap();
    std::fs::write(&c, b"other").unwrap();
    let key = |p: &std::path::Path| {
        CacheKey::derive(
            "",
            &params! { "input" => ParamValue::file_content(p).unwrap() },
        )
    };
    assert_eq!(key(&a), key(&b));
    assert_ne!(key(&a), key(&c));
    let err = ParamValue::file_content(dir.join("missing")).unwrap_err();
    assert!(matches!(err, cachet_core::Error::Io { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explicit_keys_are_validated() {
    assert!(CacheKey::explicit("", "").is_err());
    assert!(CacheKey::explicit("", "a\nb").is_err());
    assert!(CacheKey::explicit("", "x".repeat(2000)).is_err());
    assert!(CacheKey::explicit("a/b", "k").is_err());
    let k = CacheKey::explicit("team", "report-2026").unwrap();
    assert_eq!(k.to_string(), "team/report-2026");
}

/// Pinned forever for key format version 1 (docs/FORMAT.md §1). These were checked against an
/// independent Python implementation of the spec (xxhash.xxh3_128 over the documented bytes).
#[test]
fn golden_vectors_are_stable() {
    use cachet_core::ParamValue as V;
    let nested = params! {
        "m" => V::Map([("k".to_string(), V::List(vec![1.into(), "two".into(), V::Null]))].into_iter().collect()),
        "f" => 0.5,
        "b" => true,
    };
    let cases: Vec<(&str, Params, &str)> = vec![
        ("", Params::new(), "662095d44805b6d9ca0324a1bdb53301"),
        ("", params! { "x" => 1 }, "a03fe66aa1d9cdaabe3d75982d7cc585"),
        (
            "team-a",
            params! { "dataset" => "sales-2026", "window" => 30 },
            "a005dd0e5efc291f4644e88c00c0c129",
        ),
        ("", nested, "4c1a5afda9a34025aabd43d6ae2db3fe"),
        (
            "",
            params! { "x" => 1.0 },
            "b7223b9a7e23eec60d442935e9cd2ea5",
        ),
        (
            "",
            params! { "x" => "1" },
            "87c9f826156455cf09f2188d1743f660",
        ),
        (
            "models",
            params! { "dataset" => "sales-2026", "window" => 30 },
            "89bfa26627e208d76625ba5c39b0d729",
        ),
        (
            "",
            params! { "layers" => vec![64, 32], "opts" => params! { "depth" => 6, "verbose" => true } },
            "cd54e280bb5fc9b216998ea66edd7b67",
        ),
        (
            "",
            params! { "lr" => 0.1, "model" => "xgb" },
            "ce4af66e1e7d420e22fdaded8fe01fb7",
        ),
        (
            "",
            params! { "seed" => None::<i64>, "salt" => ParamValue::bytes(vec![0u8, 255]), "eps" => f64::NAN },
            "eb3101acb15e3e9a3422727db912bf68",
        ),
    ];
    for (namespace, p, expected) in cases {
        assert_eq!(
            CacheKey::derive(namespace, &p).id(),
            expected,
            "params {p:?} in namespace {namespace:?}"
        );
    }
    assert_eq!(
        hex_of(&params! { "x" => 1 }.canonical_bytes()),
        "0701000000000000000100000000000000780201000000000000000000000000000000"
    );
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
