//! The fuzz targets (`purposegate::fuzzing`) driven by proptest within a
//! bounded number of cases, so `cargo test` exercises them on every run;
//! `fuzz/` runs the same functions under libFuzzer for as long as you like
//! (docs/testing.md).

use proptest::prelude::*;

fn path_like() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        12 => "[a-z0-9]{1,6}",
        1 => Just("%75%32".to_string()),
        1 => Just("u2;v=1".to_string()),
        1 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just("%2e%2E".to_string()),
        1 => Just("%2F".to_string()),
        1 => Just("".to_string()),
        1 => "\\PC{1,4}",
    ];
    (
        prop_oneof![6 => Just("/v1/users/"), 1 => Just("/v1/users//"), 1 => Just("/v1/"), 1 => Just("/")],
        proptest::collection::vec(seg, 1..3),
        prop_oneof![1 => Just(""), 4 => Just("/conversations/c1"), 4 => Just("/files/f"), 1 => Just("/files/")],
    )
        .prop_map(|(a, segs, b)| format!("{a}{}{b}", segs.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn paths_reach_only_the_owner_the_checks_saw(p in path_like()) {
        purposegate::fuzzing::path(p.as_bytes());
    }

    #[test]
    fn arbitrary_paths(p in proptest::collection::vec(any::<u8>(), 0..80)) {
        purposegate::fuzzing::path(&p);
    }
}

#[test]
fn the_path_generator_reaches_admitted_paths() {
    // The invariant is checked only on admitted paths: make sure there are.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let admitted = (0..1000)
        .filter(|_| {
            let p = path_like().new_tree(&mut runner).unwrap().current();
            purposegate::fuzzing::path(p.as_bytes())
        })
        .count();
    assert!(admitted >= 50, "{admitted} of 1000 admitted");
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        (1_799_990_000i64..1_800_010_000).prop_map(|n| json!(n)),
        "\\PC{0,8}".prop_map(|s| json!(s)),
        Just(json!("https://idp.example.test")),
        Just(json!("purposegate")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![proptest::collection::vec(inner, 0..4).prop_map(serde_json::Value::Array)]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn claims_from_arbitrary_json(
        fields in proptest::collection::btree_map(
            prop_oneof![
                Just("iss".to_string()), Just("aud".to_string()), Just("exp".to_string()),
                Just("iat".to_string()), Just("nbf".to_string()), Just("sub".to_string()),
                Just("roles".to_string()), Just("subjects".to_string()), Just("purpose".to_string()),
                Just("training_cert_exp".to_string()), "[a-z_]{1,8}",
            ],
            json_value(),
            0..10,
        )
    ) {
        let v = serde_json::Value::Object(fields.into_iter().collect());
        purposegate::fuzzing::claims(v.to_string().as_bytes());
    }

    #[test]
    fn claims_from_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        purposegate::fuzzing::claims(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn yaml_files(text in "(([a-z_]{1,10}: )?(\\[|\\{|\\]|\\}|\"|-|,|\\n|  |[a-z0-9:./]{0,6})){0,40}") {
        purposegate::fuzzing::yaml(text.as_bytes());
    }

    #[test]
    fn audit_files(lines in proptest::collection::vec("\\PC{0,60}", 0..6)) {
        purposegate::fuzzing::audit_lines(lines.join("\n").as_bytes());
    }
}

#[test]
fn mutated_shipped_files_never_panic() {
    // Every one-byte deletion and a few insertions in the shipped files.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        "policies/policy.yaml",
        "policies/consent.yaml",
        "examples/purposegate.yaml",
    ] {
        let Ok(text) = std::fs::read(root.join(f)) else {
            continue;
        };
        for i in (0..text.len()).step_by(7) {
            let mut cut = text.clone();
            cut.remove(i);
            purposegate::fuzzing::yaml(&cut);
            let mut ins = text.clone();
            ins.insert(i, b'{');
            purposegate::fuzzing::yaml(&ins);
        }
    }
}
