//! The manifest's JSON form against Go's encoding/json: for each input,
//! Go's json.Marshal(json.Unmarshal(input)) with the Go agent's struct tags
//! must equal our Computation::from_json(input).to_json(), and inputs Go
//! refuses we refuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;

use cocos_manifest::json::Computation;
use cocos_manifest::manifest_checksum;

/// Go's verdict on each input: Ok(marshalled bytes) or Err(message).
fn go_roundtrip(inputs: &[Vec<u8>]) -> Vec<Result<Vec<u8>, String>> {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let p = dir.path().join(format!("{i}.json"));
        std::fs::write(&p, input).unwrap();
        paths.push(p);
    }
    let mut args: Vec<&OsStr> = vec![OsStr::new("json")];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    let out = String::from_utf8(common::run(&args)).unwrap();
    out.lines()
        .map(|l| match l.split_once(' ') {
            Some(("ok", h)) => Ok(hex::decode(h).unwrap()),
            Some(("err", m)) => Err(m.to_string()),
            _ => panic!("bad line {l:?}"),
        })
        .collect()
}

fn check_all(inputs: &[Vec<u8>]) {
    let go = go_roundtrip(inputs);
    assert_eq!(go.len(), inputs.len());
    for (input, go) in inputs.iter().zip(go) {
        let ours = Computation::from_json(input).map(|c| c.to_json());
        let shown = String::from_utf8_lossy(input);
        match (go, ours) {
            (Ok(g), Ok(o)) => assert_eq!(
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&g),
                "input {shown}"
            ),
            (Err(_), Err(_)) => {}
            (g, o) => panic!("input {shown}: Go {g:?}, ours {o:?}"),
        }
    }
}

const KEY_B64: &str = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=";

fn hash_json(n: usize, start: u32) -> String {
    let v: Vec<String> = (0..n)
        .map(|i| ((start + i as u32 * 7) % 256).to_string())
        .collect();
    format!("[{}]", v.join(","))
}

#[test]
fn a_full_manifest_reencodes_as_go_does() {
    let full = format!(
        r#"{{
  "id": "comp-1", "name": "Tom & Jerry <test>", "description": "line\nnext\ttab \"quoted\" back\\slash é 😀 \u2028 \u2029 \u0001\u001f\u007f",
  "datasets": [
    {{"hash": {h1}, "user_key": "{KEY_B64}", "filename": "iris.csv", "decompress": true,
      "source": {{"type": "s3", "url": "s3://b/k?a=1&b=<2>", "kbs_resource_path": "default/key/k", "encrypted": true}},
      "kbs": {{"url": "https://kbs", "enabled": true}}}},
    {{"hash": {h2}, "user_key": "{KEY_B64}", "filename": "wine"}}
  ],
  "algorithm": {{"hash": {h3}, "user_key": "{KEY_B64}", "algo_type": "python",
    "algo_args": ["--x", "<y>", ""], "requirements_hash": {h4}}},
  "result_consumers": [{{"user_key": "{KEY_B64}"}}, {{}}]
}}"#,
        h1 = hash_json(32, 0),
        h2 = hash_json(32, 100),
        h3 = hash_json(32, 200),
        h4 = hash_json(32, 5),
    );
    check_all(&[full.into_bytes()]);
}

#[test]
fn go_decoding_quirks_are_followed() {
    let cases: Vec<String> = vec![
        // Keys match case-insensitively; unknown keys are ignored.
        r#"{"ID":"x","NAME":"n","Datasets":[{"FileName":"a","Decompress":true}],"extra":{"deep":[1,2]}}"#.into(),
        // U+212A KELVIN SIGN folds to k, U+017F LONG S to s.
        "{\"datasets\":[{\"\u{212a}bs\":{\"url\":\"u\"},\"\u{17f}ource\":{\"type\":\"t\"}}]}".into(),
        // null leaves zero values; null pointers and lists are absent.
        r#"{"id":null,"datasets":null,"algorithm":null,"result_consumers":null}"#.into(),
        r#"{"datasets":[null,{"hash":null,"user_key":null,"source":null,"kbs":null}]}"#.into(),
        r#"{"algorithm":{"hash":[1,null,3],"algo_args":[null,"a"],"requirements_hash":null}}"#.into(),
        // Short and long hash arrays: zero-filled, or cut at 32.
        format!(r#"{{"datasets":[{{"hash":{}}},{{"hash":{}}}]}}"#, hash_json(31, 1), hash_json(33, 2)),
        // Empty objects and lists.
        r#"{"algorithm":{},"datasets":[],"result_consumers":[{}],"description":""}"#.into(),
        r#"{"algorithm":{"source":{},"kbs":{},"algo_args":[],"requirements_hash":[]}}"#.into(),
        // Base64: newlines inside, and a byte array instead of a string.
        r#"{"result_consumers":[{"user_key":"AAEC\nAwQF\r\nBgc="},{"user_key":[1,2,255]}]}"#.into(),
        // Non-canonical trailing bits are accepted and re-encoded canonically.
        r#"{"result_consumers":[{"user_key":"AB=="}]}"#.into(),
        // Escapes in input.
        r#"{"name":"\u003c\/script\u003e \ud83d\ude00 \u00e9"}"#.into(),
        "null".into(),
        "{}".into(),
        "  {\"id\":\"x\"}  \n".into(),
    ];
    check_all(
        &cases
            .into_iter()
            .map(String::into_bytes)
            .collect::<Vec<_>>(),
    );
}

#[test]
fn inputs_go_refuses_are_refused() {
    let cases: Vec<&str> = vec![
        r#"{"datasets":[{"hash":[256]}]}"#,
        r#"{"datasets":[{"hash":[-1]}]}"#,
        r#"{"datasets":[{"hash":[1.5]}]}"#,
        r#"{"datasets":[{"hash":[1e2]}]}"#,
        r#"{"datasets":[{"hash":"AAAA"}]}"#,
        r#"{"datasets":[{"decompress":"true"}]}"#,
        r#"{"datasets":{}}"#,
        r#"{"algorithm":[]}"#,
        r#"{"id":5}"#,
        r#"{"result_consumers":[{"user_key":"not base64!"}]}"#,
        r#"{"result_consumers":[{"user_key":"AAE"}]}"#,
        r#"{"id":"x"} trailing"#,
        r#"[]"#,
        r#"{"id":"x""#,
    ];
    check_all(
        &cases
            .into_iter()
            .map(|s| s.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    );
}

#[test]
fn control_characters_escape_as_go_1_22_and_later() {
    // \b and \f: Go 1.22 changed them from \u0008/\u000c to \b/\f; we
    // follow current Go. Compared with Go only when it is that recent.
    let input = br#"{"name":"a\bb\fc"}"#.to_vec();
    let ours = Computation::from_json(&input).unwrap().to_json();
    assert_eq!(ours, br#"{"name":"a\bb\fc"}"#);
    if common::go_minor() >= 22 {
        check_all(&[input]);
    }
}

#[test]
fn random_strings_reencode_as_go_does() {
    // Strings drawn from the characters whose escaping differs between
    // encoders, in random manifests (deterministic seed).
    let pool: Vec<char> = "aZ09 \"\\/<>&'\n\r\t\u{1}\u{1f}\u{7f}\u{80}é\u{2028}\u{2029}\u{fffd}😀~"
        .chars()
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut inputs = Vec::new();
    for _ in 0..200 {
        let s = |rnd: &mut dyn FnMut(usize) -> usize| -> String {
            let len = rnd(12);
            (0..len).map(|_| pool[rnd(pool.len())]).collect()
        };
        let c = Computation {
            id: s(&mut rnd),
            name: s(&mut rnd),
            description: s(&mut rnd),
            datasets: vec![cocos_manifest::json::Dataset {
                filename: s(&mut rnd),
                ..Default::default()
            }],
            algorithm: Some(cocos_manifest::json::Algorithm {
                algo_args: vec![s(&mut rnd), s(&mut rnd)],
                ..Default::default()
            }),
            result_consumers: vec![],
        };
        inputs.push(c.to_json());
    }
    check_all(&inputs);
}

#[test]
fn checksum_is_sha3_of_what_go_marshals() {
    let input = format!(
        r#"{{"id":"c","algorithm":{{"hash":{},"user_key":"{KEY_B64}"}}}}"#,
        hash_json(32, 9)
    )
    .into_bytes();
    let go = go_roundtrip(std::slice::from_ref(&input))
        .remove(0)
        .unwrap();
    use sha3::Digest;
    let expected: [u8; 32] = sha3::Sha3_256::digest(&go).into();
    assert_eq!(manifest_checksum(&input).unwrap(), expected);
}

#[test]
fn a_repeated_key_is_refused_though_go_would_merge() {
    let err = Computation::from_json(br#"{"id":"a","ID":"b"}"#).unwrap_err();
    assert!(err.to_string().contains("repeats field \"id\""), "{err}");
}
